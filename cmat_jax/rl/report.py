"""The end of a CMAT run: a plot of train and eval success over iterations, and the summary.

The summary compares the warm start (the evaluation at iteration 0) with the end of the iterations
and, when the run has an SFT twin (rl.sft_twin, rl/sft_twin.py), with the twin's end at equal
training time: held-out greedy success, format failures and Checker blocks on first trials, and the
reflections used; and the share of successes whose answer the database showed (grounded, see
rl/grounding.py: the rest were right by luck). It is printed and written to <workdir>/summary.txt
and summary.json.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from cmat_jax.fileio import write_text_atomic
from cmat_jax.rl.sft_twin import iteration_seconds

SUMMARY_TEXT, SUMMARY_JSON = "summary.txt", "summary.json"
_COLUMNS = ("success_rate", "grounded_success_rate", "format_failure_rate", "checker_block_rate", "reflections")


def plot_success(records: Sequence[dict], path: str, twin: Sequence[dict] = ()) -> None:
    """PNG of the success rate of training rollouts and of greedy evaluation, per iteration; the SFT
    twin's evaluations, if any, beside the iterations they match in training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["iteration"], r["success_rate"]) for r in records if r["phase"] == "rl"]
    evaluation = [(r["iteration"], r["success_rate"]) for r in records if r["phase"] == "eval"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train rollouts (sampled)", color="tab:blue", alpha=0.7)
    if evaluation:
        ax.plot(*zip(*evaluation), label="held-out tasks (greedy)", color="tab:red", marker="o")
    twin_points = [(r["beside_iteration"], r["success_rate"]) for r in twin if r["phase"] == "eval"]
    if twin_points and evaluation:
        ax.plot(*zip(*([evaluation[0]] + twin_points)), label="SFT twin, held-out (equal training time)",
                color="tab:green", marker="s", linestyle="--")
    ax.set_xlabel("CMAT iteration (0 = after the SFT warm start)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary(records: Sequence[dict], twin: Sequence[dict] = ()) -> dict:
    """The warm start, the end of the iterations and the twin's end, as plain numbers."""
    evals = [r for r in records if r["phase"] == "eval"]
    pick = lambda r: {k: r.get(k) for k in _COLUMNS}  # noqa: E731
    seconds = iteration_seconds(records)
    out = {"warm_start": pick(evals[0]), "final": pick(evals[-1]), "iterations": evals[-1]["iteration"],
           "iterations_train_s": seconds[-1][1] if seconds else 0.0,
           "rise_points": 100 * (evals[-1]["success_rate"] - evals[0]["success_rate"]),
           "curve": [(r["iteration"], r["success_rate"]) for r in evals]}
    twin_evals = [r for r in twin if r["phase"] == "eval"]
    if twin_evals:
        end = twin_evals[-1]
        out["twin"] = dict(pick(end), steps=end["twin_step"], train_s=end["train_s"])
        out["twin_curve"] = [(r["beside_iteration"], r["success_rate"]) for r in twin_evals]
        out["cmat_minus_twin_points"] = 100 * (evals[-1]["success_rate"] - end["success_rate"])
    return out


def _row(name: str, values: dict, seconds: Optional[float]) -> str:
    wall = f"{seconds:>9.1f}" if seconds is not None else f"{'-':>9}"
    grounded = values["grounded_success_rate"]
    grounded = f"{grounded:>8.3f}" if grounded is not None else f"{'-':>8}"
    return (f"{name:<26} {values['success_rate']:>8.3f} {grounded} {values['format_failure_rate']:>8.3f} "
            f"{values['checker_block_rate']:>8.3f} {values['reflections'] or 0:>11} {wall}")


def summary_table(records: Sequence[dict], twin: Sequence[dict] = ()) -> str:
    """One row per evaluation; then the warm start, the end, the twin's end, and the changes."""
    evals = [r for r in records if r["phase"] == "eval"]
    lines = [f"{'iteration':>9} {'eval success':>12} {'format fail':>11} {'reward':>7}", "-" * 42]
    for r in evals:
        lines.append(f"{r['iteration']:>9} {r['success_rate']:>12.3f} {r['format_failure_rate']:>11.3f} "
                     f"{r['reward_mean']:>7.3f}")
    s = summary(records, twin)
    header = (f"{'held-out tasks (greedy)':<26} {'success':>8} {'grounded':>8} {'format':>8} {'Checker':>8} "
              f"{'reflections':>11} {'train s':>9}")
    lines += ["", header, f"{'':<26} {'':>8} {'':>8} {'failures':>8} {'blocks':>8}", "-" * len(header),
              _row("warm start", s["warm_start"], None),
              _row(f"CMAT, iteration {s['iterations']}", s["final"], s["iterations_train_s"])]
    if "twin" in s:
        lines.append(_row(f"SFT twin, {s['twin']['steps']} more steps", s["twin"], s["twin"]["train_s"]))
    lines.append("-" * len(header))
    lines.append(f"CMAT iterations: {s['warm_start']['success_rate']:.3f} -> {s['final']['success_rate']:.3f} "
                 f"({s['rise_points']:+.1f} points)")
    if "twin" in s:
        lines.append(f"CMAT against the SFT twin (same warm start, same demonstrations, equal training time): "
                     f"{s['cmat_minus_twin_points']:+.1f} points")
    return "\n".join(lines)


def write_summary(workdir: str, records: Sequence[dict], twin: Sequence[dict] = ()) -> str:
    """Writes summary.txt (the table) and summary.json (its numbers) to `workdir`; returns the table."""
    table = summary_table(records, twin)
    write_text_atomic(os.path.join(workdir, SUMMARY_TEXT), table + "\n")
    write_text_atomic(os.path.join(workdir, SUMMARY_JSON), json.dumps(summary(records, twin), indent=2) + "\n")
    return table
