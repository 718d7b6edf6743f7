"""Run one training config over several seeds at once, then report every headline number as mean ± std.

    python tools/seeds.py --config configs/cmat_smollm2_135m.py --seeds 0,1,2 --out R -- --config.rl.sft_twin=true
    python tools/seeds.py --out R --seeds 0,1,2 --summarize-only [--metric overall_cat_accuracy]

Each seed S runs `python -m cmat_jax.train --config CONFIG --config.seed=S --config.data.seed=S
--config.workdir=OUT/seed_S` plus the arguments after `--` (each `{seed}` in them replaced by S, e.g.
`--config.tasks.train=tasks_{seed}.jsonl`), in its own process, `--parallel` of them at a time
(default: all). On a GPU the processes share it: each gets XLA_PYTHON_CLIENT_MEM_FRACTION = 0.9 / parallel
unless the environment already sets it. Output goes to OUT/seed_S.log. Then, from each run's records
(metrics.jsonl, and sft_twin/metrics.jsonl with rl.sft_twin), the held-out evaluations' `--metric` at the
warm start, at the end of the iterations and at the SFT twin's end, per seed and as mean ± std (population
std over the seeds), written to OUT/seeds.md and OUT/seeds.json and printed. A seed whose run failed is
reported as failed, with its log's last line, and left out of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROWS = (("warm_start", "after the warm start"), ("final", "after the CMAT iterations"),
        ("twin", "SFT twin (same warm start, equal training time)"), ("cmat_minus_twin", "CMAT - twin"))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the training config (configs/X.py); not needed with --summarize-only")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated non-negative integers")
    parser.add_argument("--out", required=True, help="directory for the runs (OUT/seed_S), logs and the report")
    parser.add_argument("--parallel", type=int, default=0, help="runs at once; 0: every seed at once")
    parser.add_argument("--metric", default="success_rate",
                        help="held-out evaluation field to report (overall_cat_accuracy for DBBench dev)")
    parser.add_argument("--summarize-only", action="store_true", help="report the runs already in OUT")
    args, extra = parser.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.exit(2, f"error: --seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2\n")
    if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.exit(2, f"error: --seeds {args.seeds} must be distinct non-negative integers\n")
    if args.parallel < 0:
        parser.exit(2, f"error: --parallel is {args.parallel}; give 0 (every seed at once) or a positive count\n")
    if not args.summarize_only and not (args.config and os.path.isfile(args.config)):
        parser.exit(2, f"error: --config {args.config!r} is not a file; give the training config to run\n")
    if args.summarize_only and extra:
        parser.exit(2, f"error: --summarize-only runs nothing, so the training arguments {extra} have no use\n")
    return args, extra


def seed_workdir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed_{seed}")


def train_command(config: str, seed: int, out: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "cmat_jax.train", f"--config={config}", f"--config.seed={seed}",
            f"--config.data.seed={seed}", f"--config.workdir={seed_workdir(out, seed)}",
            *(arg.replace("{seed}", str(seed)) for arg in extra)]


def run_seeds(args, extra) -> dict[int, int]:
    """Runs every seed, `parallel` at a time; returns seed -> exit status."""
    os.makedirs(args.out, exist_ok=True)
    parallel = args.parallel or len(args.seeds)
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
    waiting, running, status = list(args.seeds), {}, {}
    while waiting or running:
        while waiting and len(running) < parallel:
            seed = waiting.pop(0)
            log = open(os.path.join(args.out, f"seed_{seed}.log"), "w", encoding="utf-8")
            command = train_command(args.config, seed, args.out, extra)
            print(f"seed {seed}: {' '.join(command)}", flush=True)
            running[seed] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        for seed, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                status[seed] = process.returncode
                print(f"seed {seed}: exit status {process.returncode}", flush=True)
                del running[seed]
        time.sleep(1)
    return status


def read_records(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def seed_result(workdir: str, metric: str) -> dict:
    """{warm_start, final, twin, cmat_minus_twin}: `metric` of the held-out evaluations (None where absent)."""
    evals = [r for r in read_records(os.path.join(workdir, "metrics.jsonl")) if r.get("phase") == "eval"]
    twin = [r for r in read_records(os.path.join(workdir, "sft_twin", "metrics.jsonl"))
            if r.get("phase") == "eval" and r.get("final")]
    if evals and metric not in evals[-1]:
        raise ValueError(f"{workdir}'s evaluations have no field {metric!r}; they have "
                         f"{sorted(k for k, v in evals[-1].items() if isinstance(v, (int, float)))}")
    result = {"warm_start": evals[0].get(metric) if evals else None,
              "final": evals[-1].get(metric) if len(evals) > 1 else None,
              "twin": twin[-1].get(metric) if twin else None}
    both = result["final"] is not None and result["twin"] is not None
    result["cmat_minus_twin"] = result["final"] - result["twin"] if both else None
    return result


def last_line(path: str) -> str:
    if not os.path.isfile(path):
        return "no log"
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "empty log"


def summarize(out: str, seeds: list[int], metric: str, status: dict[int, int]) -> dict:
    per_seed, failed = {}, {}
    for seed in seeds:
        workdir = seed_workdir(out, seed)
        if status.get(seed, 0) != 0 or not os.path.isfile(os.path.join(workdir, "summary.json")):
            failed[seed] = last_line(os.path.join(out, f"seed_{seed}.log"))
            continue
        per_seed[seed] = seed_result(workdir, metric)
    means = {}
    for key, _ in ROWS:
        values = [r[key] for r in per_seed.values() if r[key] is not None]
        if values:
            means[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}
    return {"metric": metric, "seeds": per_seed, "failed": failed, "mean_std": means}


def table(report: dict) -> str:
    seeds = sorted(report["seeds"])
    lines = [f"held-out `{report['metric']}` | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std",
             "|".join(["---"] * (len(seeds) + 2))]
    for key, label in ROWS:
        number = "{:+.3f}" if key == "cmat_minus_twin" else "{:.3f}"
        cells = ["-" if report["seeds"][s][key] is None else number.format(report["seeds"][s][key]) for s in seeds]
        spread = report["mean_std"].get(key)
        mean = f"{number.format(spread['mean'])} ± {spread['std']:.3f}" if spread else "-"
        lines.append(" | ".join([label, *cells, mean]))
    lines = [f"| {line} |" for line in lines]
    for seed, line in sorted(report["failed"].items()):
        lines.append(f"\nseed {seed} failed: {line}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    status = {} if args.summarize_only else run_seeds(args, extra)
    try:
        report = summarize(args.out, args.seeds, args.metric, status)
    except ValueError as e:
        print(f"error: --metric: {e}", file=sys.stderr)
        return 2
    text = table(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "seeds.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "seeds.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(text, end="")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
