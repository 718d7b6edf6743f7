"""The end of a CMAT run: a plot of train and eval success over iterations, and a summary table."""

from __future__ import annotations

import os
from typing import Sequence


def plot_success(records: Sequence[dict], path: str) -> None:
    """PNG of the success rate of training rollouts and of greedy evaluation, per iteration."""
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
    ax.set_xlabel("CMAT iteration (0 = after the SFT warm start)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summary_table(records: Sequence[dict]) -> str:
    """One row per evaluation, and the change from the first to the last."""
    evals = [r for r in records if r["phase"] == "eval"]
    lines = [f"{'iteration':>9} {'eval success':>12} {'format fail':>11} {'reward':>7}", "-" * 42]
    for r in evals:
        lines.append(f"{r['iteration']:>9} {r['success_rate']:>12.3f} {r['format_failure_rate']:>11.3f} "
                     f"{r['reward_mean']:>7.3f}")
    if len(evals) >= 2:
        change = evals[-1]["success_rate"] - evals[0]["success_rate"]
        lines.append("-" * 42)
        lines.append(f"eval success {evals[0]['success_rate']:.3f} -> {evals[-1]['success_rate']:.3f} "
                     f"({100 * change:+.1f} points)")
    return "\n".join(lines)
