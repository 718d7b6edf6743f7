"""Run the SQL environment's adversarial corpus (cmat_jax/sqlfuzz/fuzz.py) and print what it found.

    python tools/fuzz_sql.py                        # full corpus: >= 10,000 statements, default limits
    python tools/fuzz_sql.py --sample 300 --timeout 0.25
    python tools/fuzz_sql.py --families issue,time --json report.json

Exits 1 when anything the sandbox promises was broken: an exception escaped, a step
took longer than the timeout + 0.5 s, the peak RSS reached 1 GiB, an observation
exceeded its limit, a function outside the allow-list ran, a task table changed, a
file was created or changed, or an episode database failed SQLite's integrity check.
Attacks' paths point into a fresh temporary directory, which is the working
directory during the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cmat_jax.envs.sql.database import Limits  # noqa: E402
from cmat_jax.sqlfuzz import fuzz  # noqa: E402
from cmat_jax.fileio import write_json_atomic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--statements", type=int, default=10_000, help="least number of statements in the corpus")
    parser.add_argument("--sample", type=int, default=0, help="run a sample of about this many episodes (0: all)")
    parser.add_argument("--families", default="", help="comma-separated families to run (default: all)")
    parser.add_argument("--timeout", type=float, default=Limits().timeout_s, help="statement timeout, seconds")
    parser.add_argument("--json", default="", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.statements < 0 or args.sample < 0:
        parser.error("--timeout must be positive; --statements and --sample must not be negative")

    limits = Limits(timeout_s=args.timeout)
    json_path = os.path.abspath(args.json) if args.json else ""
    if json_path and (os.path.isdir(json_path) or not os.path.isdir(os.path.dirname(json_path))):
        parser.error(f"--json {args.json}: expected a file path in an existing directory")  # before the long run
    with tempfile.TemporaryDirectory(prefix="fuzz_sql_") as workdir:
        cases = fuzz.corpus(args.seed, args.statements, tmp=workdir)
        families = {f for f in args.families.split(",") if f}
        known = {c.family for c in cases}
        if families - known:
            parser.error(f"unknown families {sorted(families - known)}; known: {', '.join(sorted(known))}")
        if families:
            cases = [c for c in cases if c.family in families]
        if args.sample:
            cases = fuzz.sample(cases, args.sample, args.seed)
        print(f"{len(cases)} episodes, {sum(len(c.statements) for c in cases)} statements, seed {args.seed}, "
              f"timeout {limits.timeout_s} s, heap cap {limits.heap_limit_bytes >> 20} MiB; Python "
              f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs", flush=True)

        def progress(number: int, report: fuzz.Report) -> None:
            if (number + 1) % 1000 == 0:
                print(f"  {number + 1} episodes, {report.statements} statements, slowest step "
                      f"{report.slowest[0][0] if report.slowest else 0:.2f} s", flush=True)

        cwd = os.getcwd()
        os.chdir(workdir)  # relative paths in attacks land in the watched directory
        try:
            report = fuzz.run(cases, limits, workdir=workdir, progress=progress)
        finally:
            os.chdir(cwd)
    print("\n".join(report.lines()))
    if json_path:
        try:
            write_json_atomic(json_path, report.summary(), indent=1)  # whole or not at all
        except OSError as e:
            print(f"error: --json {args.json}: writing failed ({e.strerror or e}); the report is above", file=sys.stderr)
            return 2
    print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
