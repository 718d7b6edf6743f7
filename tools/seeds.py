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

With `--heldout TASKS.jsonl` (a task file no run trained on, e.g. tools/make_sql_tasks.py with a seed
training never uses) each finished seed's CMAT end and SFT twin are then also scored on it by
`python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model
--config.model.workdir=OUT/seed_S[/sft_twin] --config.tasks=TASKS` plus each `--eval-arg` (e.g.
`--eval-arg=--config.reflection.trials=1`), into OUT/heldout/seed_S_cmat and seed_S_twin; the report
gains their `--heldout-metric` and its CMAT - twin (a failed evaluation is printed with its log's last
line and shown as '-'). A later `--summarize-only` reads them again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROWS = (("warm_start", "after the warm start"), ("final", "after the CMAT iterations"),
        ("twin", "SFT twin (same warm start, equal training time)"), ("cmat_minus_twin", "CMAT - twin"))
HELDOUT_ROWS = (("heldout_final", "held-out set: after the CMAT iterations"),
                ("heldout_twin", "held-out set: SFT twin"), ("heldout_cmat_minus_twin", "held-out set: CMAT - twin"))
HELDOUT_ARMS = {"cmat": "", "twin": "sft_twin"}  # arm -> the workdir below OUT/seed_S it evaluates
EVAL_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "eval_dbbench.py")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the training config (configs/X.py); not needed with --summarize-only")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated non-negative integers")
    parser.add_argument("--out", required=True, help="directory for the runs (OUT/seed_S), logs and the report")
    parser.add_argument("--parallel", type=int, default=0, help="runs at once; 0: every seed at once")
    parser.add_argument("--metric", default="success_rate",
                        help="held-out evaluation field to report (overall_cat_accuracy for DBBench dev)")
    parser.add_argument("--summarize-only", action="store_true", help="report the runs already in OUT")
    parser.add_argument("--heldout", help="a task file (.jsonl) no run trained on: score each seed's CMAT end "
                                          "and SFT twin on it after the runs")
    parser.add_argument("--heldout-metric", default="overall_cat_accuracy",
                        help="field of the held-out evaluations' metrics.json to report")
    parser.add_argument("--eval-arg", action="append", default=[],
                        help="an argument for every held-out evaluation (repeatable), "
                             "e.g. --eval-arg=--config.reflection.trials=1")
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
    if args.heldout and args.summarize_only:
        parser.exit(2, "error: --summarize-only runs nothing, so --heldout has no use; it reports the held-out "
                       "evaluations already in OUT/heldout\n")
    if args.heldout and not os.path.isfile(args.heldout):
        parser.exit(2, f"error: --heldout {args.heldout!r} is not a file; give a task file (.jsonl) no run trained on, "
                       "e.g. from tools/make_sql_tasks.py with a seed training never uses\n")
    if args.eval_arg and not args.heldout:
        parser.exit(2, f"error: --eval-arg {args.eval_arg} is for the held-out evaluations; give --heldout too\n")
    if args.summarize_only and extra:
        parser.exit(2, f"error: --summarize-only runs nothing, so the training arguments {extra} have no use\n")
    return args, extra


def seed_workdir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed_{seed}")


def train_command(config: str, seed: int, out: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "cmat_jax.train", f"--config={config}", f"--config.seed={seed}",
            f"--config.data.seed={seed}", f"--config.workdir={seed_workdir(out, seed)}",
            *(arg.replace("{seed}", str(seed)) for arg in extra)]


def eval_command(workdir: str, tasks: str, out_dir: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "cmat_jax.evaluate", f"--config={EVAL_CONFIG}", "--config.agent=model",
            f"--config.model.workdir={workdir}", f"--config.tasks={tasks}", f"--config.workdir={out_dir}", *extra]


def heldout_dir(out: str, seed: int, arm: str) -> str:
    return os.path.join(out, "heldout", f"seed_{seed}_{arm}")


def run_processes(jobs: dict, parallel: int) -> dict:
    """Runs jobs {key: (command, log path)}, `parallel` at a time, the GPU's memory shared between them;
    returns key -> exit status."""
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
    waiting, running, status = list(jobs), {}, {}
    while waiting or running:
        while waiting and len(running) < parallel:
            key = waiting.pop(0)
            command, log_path = jobs[key]
            log = open(log_path, "w", encoding="utf-8")
            print(f"{key}: {' '.join(command)}", flush=True)
            running[key] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        for key, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                status[key] = process.returncode
                print(f"{key}: exit status {process.returncode}", flush=True)
                del running[key]
        time.sleep(1)
    return status


def run_seeds(args, extra) -> dict[int, int]:
    """Trains every seed; returns seed -> exit status. Held-out scores of earlier models of these seeds
    are deleted first, so a report never shows them beside the new runs."""
    os.makedirs(args.out, exist_ok=True)
    for seed in args.seeds:
        for arm in HELDOUT_ARMS:
            shutil.rmtree(heldout_dir(args.out, seed, arm), ignore_errors=True)
    jobs = {f"seed {seed}": (train_command(args.config, seed, args.out, extra),
                             os.path.join(args.out, f"seed_{seed}.log")) for seed in args.seeds}
    status = run_processes(jobs, args.parallel or len(args.seeds))
    return {seed: status[f"seed {seed}"] for seed in args.seeds}


def run_heldout(args, trained: list[int]) -> list[str]:
    """Scores each trained seed's CMAT end and SFT twin (where the run made one) on the --heldout tasks;
    returns the evaluations that failed, each with its log."""
    jobs = {}
    for seed in trained:
        for arm, below in HELDOUT_ARMS.items():
            workdir = os.path.join(seed_workdir(args.out, seed), below)
            if os.path.isfile(os.path.join(workdir, "config.json")):
                out_dir = heldout_dir(args.out, seed, arm)
                os.makedirs(out_dir, exist_ok=True)
                jobs[f"seed {seed} {arm} held-out"] = (eval_command(workdir, args.heldout, out_dir, args.eval_arg),
                                                       out_dir + ".log")
    status = run_processes(jobs, args.parallel or len(args.seeds))
    return [f"{key} failed: {last_line(jobs[key][1])} ({jobs[key][1]})" for key, rc in status.items() if rc]


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
    result["cmat_minus_twin"] = difference(result["final"], result["twin"])
    return result


def difference(a, b):
    return a - b if a is not None and b is not None else None


def heldout_result(out: str, seed: int, metric: str) -> dict:
    """{heldout_final, heldout_twin, heldout_cmat_minus_twin}: `metric` of the held-out evaluations."""
    values = {}
    for arm in HELDOUT_ARMS:
        path = os.path.join(heldout_dir(out, seed, arm), "metrics.json")
        if not os.path.isfile(path):
            values[arm] = None
            continue
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
        if metric not in metrics:
            raise ValueError(f"{path} has no field {metric!r}; it has "
                             f"{sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))}")
        values[arm] = metrics[metric]
    return {"heldout_final": values["cmat"], "heldout_twin": values["twin"],
            "heldout_cmat_minus_twin": difference(values["cmat"], values["twin"])}


def last_line(path: str) -> str:
    if not os.path.isfile(path):
        return "no log"
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "empty log"


def finished(out: str, seeds: list[int], status: dict[int, int]) -> list[int]:
    return [seed for seed in seeds
            if status.get(seed, 0) == 0 and os.path.isfile(os.path.join(seed_workdir(out, seed), "summary.json"))]


def summarize(out: str, seeds: list[int], metric: str, status: dict[int, int],
              heldout_metric: str = "overall_cat_accuracy") -> dict:
    done = finished(out, seeds, status)
    failed = {seed: last_line(os.path.join(out, f"seed_{seed}.log")) for seed in seeds if seed not in done}
    per_seed = {seed: seed_result(seed_workdir(out, seed), metric) for seed in done}
    heldout = os.path.isdir(os.path.join(out, "heldout"))
    if heldout:
        for seed in done:
            per_seed[seed].update(heldout_result(out, seed, heldout_metric))
    means = {}
    for key, _ in ROWS + (HELDOUT_ROWS if heldout else ()):
        values = [r[key] for r in per_seed.values() if r[key] is not None]
        if values:
            means[key] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}
    return {"metric": metric, "heldout_metric": heldout_metric if heldout else None, "seeds": per_seed,
            "failed": failed, "mean_std": means}


def table(report: dict) -> str:
    seeds = sorted(report["seeds"])
    lines = [f"held-out `{report['metric']}` | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std",
             "|".join(["---"] * (len(seeds) + 2))]
    heldout = tuple((key, f"{label} (`{report['heldout_metric']}`)") for key, label in HELDOUT_ROWS)
    for key, label in ROWS + (heldout if report["heldout_metric"] else ()):
        number = "{:+.3f}" if key.endswith("cmat_minus_twin") else "{:.3f}"
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
    heldout_failed = run_heldout(args, finished(args.out, args.seeds, status)) if args.heldout else []
    try:
        report = summarize(args.out, args.seeds, args.metric, status, args.heldout_metric)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "seeds.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "seeds.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(text, end="")
    for line in heldout_failed:
        print(line)
    return 1 if report["failed"] or heldout_failed else 0


if __name__ == "__main__":
    sys.exit(main())
