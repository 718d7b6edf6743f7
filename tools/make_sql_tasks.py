"""Writes generated DBBench-style training tasks as JSONL (the format load_tasks reads).

    python tools/make_sql_tasks.py --n 2000 --seed 0 --out data/train_dbbench.jsonl
    python tools/make_sql_tasks.py --n 500 --seed 0 --profile tiny --out data/train_tiny.jsonl
    python tools/make_sql_tasks.py --n 4000 --seed 0 --profile dbbench+hard --out data/train_mix.jsonl

The same arguments always write the same bytes; see cmat_jax/taskgen/generate.py and docs/tasks.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cmat_jax.fileio import disk_error  # noqa: E402
from cmat_jax.envs.sql.tasks import load_tasks  # noqa: E402
from cmat_jax.taskgen.generate import mixture, write_tasks  # noqa: E402
from cmat_jax.taskgen.profiles import GENERATED_TYPES  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="number of tasks")
    parser.add_argument("--seed", type=int, required=True, help="generator seed (non-negative)")
    parser.add_argument("--out", required=True, help="output .jsonl path (its directory must exist)")
    parser.add_argument("--profile", default="dbbench",
                        help="dbbench: realistic tables and phrasings; tiny: small tables for the CPU demo; lookup, "
                        "hard (cmat_jax/taskgen/profiles.py); several joined by '+' interleave their tasks")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.exit(2, f"error: --n is {args.n}; it is the number of tasks to write, a positive integer\n")
    if args.seed < 0:
        parser.exit(2, f"error: --seed is {args.seed}; it must be a non-negative integer\n")
    try:
        mixture(args.profile)
    except ValueError as e:
        parser.exit(2, f"error: --profile: {e}\n")
    try:
        count = write_tasks(args.out, n=args.n, seed=args.seed, profile=args.profile)
    except (ValueError, OSError) as e:  # the file is written whole or not at all (no temporary file is left)
        found = disk_error(e) if isinstance(e, OSError) else None
        parser.exit(2, f"error: --out {args.out}: {found.line() if found else e}\n")
    counts = collections.Counter(task.task_type for task in load_tasks(args.out))
    print(f"wrote {count} {args.profile} tasks (seed {args.seed}) to {args.out}")
    print("  " + ", ".join(f"{t} {counts[t]}" for t in GENERATED_TYPES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
