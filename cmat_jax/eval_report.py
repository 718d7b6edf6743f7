"""Evaluation results: DBBench metrics of a variant's trajectories, the printed table, the ablation table and plot.

An episode is one (task, sample) played for up to `trials` trials; the engine
retries only failed trials, so an episode's last trajectory is correct exactly
when any of its trials is. DBBench's metrics (envs/sql/metrics.py) are computed
over those last trajectories' final environment infos: an episode counts as
correct if any of its trials is correct. `per_trial` adds, for each trial, how
many episodes reached it, how many of those it solved, and the accuracy over all
episodes within the first trials (the first trial's is accuracy without
reflection). `recovery` counts the first trials whose first statement errored or was blocked, and how many
of them still solved the task: recovery within an episode, before any reflection.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

from cmat_jax.agents.rewards import recovery_counts
from cmat_jax.agents.trajectory import STATUSES, Trajectory
from cmat_jax.envs.sql.metrics import REPORTED_TYPES, dbbench_metrics

# Columns of the ablation table and plot: DBBench's accuracies in its order, then the overall score.
COLUMNS = REPORTED_TYPES + ("overall_cat",)


def final_trajectories(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """Each episode's last trial, in the order of the episodes' first trials."""
    last: dict[tuple[int, int], Trajectory] = {}
    for trajectory in trajectories:
        key = (trajectory.group_id, trajectory.sample)
        if key in last and last[key].trial >= trajectory.trial:
            raise ValueError(f"trajectories of episode {key} are not in trial order")
        last[key] = trajectory
    return list(last.values())


def variant_metrics(trajectories: Sequence[Trajectory], trials: int) -> dict[str, Any]:
    """DBBench metrics over each episode's last trial, per-trial accuracy and the final statuses."""
    final = final_trajectories(trajectories)
    metrics = dbbench_metrics([t.final_info for t in final])
    per_trial, solved = [], 0
    for trial in range(trials):
        ran = [t for t in trajectories if t.trial == trial]
        correct = sum(t.correct for t in ran)
        solved += correct
        per_trial.append({"trial": trial + 1, "episodes": len(ran), "correct": correct,
                          "accuracy": correct / len(ran) if ran else 0.0,
                          "cumulative_accuracy": solved / len(final) if final else 0.0})
    statuses = collections.Counter(t.status for t in final)
    failed_first, recovered = recovery_counts([t for t in trajectories if t.trial == 0])
    metrics["recovery"] = {"first_statement_failed": failed_first, "recovered": recovered,
                           "rate": recovered / failed_first if failed_first else 0.0}
    metrics["per_trial"] = per_trial
    metrics["statuses"] = {s: statuses.get(s, 0) for s in STATUSES}
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """One variant's accuracies per DBBench type, as the CLI prints them."""
    lines = [f"{'type':<18} {'n':>4} {'accuracy':>9}", "-" * 33]
    for group in REPORTED_TYPES:
        lines.append(f"{group:<18} {metrics['counts'][group]:>4} {metrics[group + '_accuracy']:>9.3f}")
    lines.append("-" * 33)
    lines.append(f"{'overall_cat':<18} {metrics['episodes']:>4} {metrics['overall_cat_accuracy']:>9.3f}")
    lines.append(
        f"format failures {metrics['format_failures']}, round-limit failures {metrics['round_limit_failures']}, "
        f"checker rejections {metrics['checker_rejections']}"
    )
    if "recovery" in metrics:
        r = metrics["recovery"]
        lines.append(f"first statement failed in {r['first_statement_failed']} first trials; {r['recovered']} of "
                     f"them still solved the task ({r['rate']:.3f})")
    if len(metrics.get("per_trial", ())) > 1:
        lines.append("accuracy within trials: " + ", ".join(
            f"{t['trial']}: {t['cumulative_accuracy']:.3f}" for t in metrics["per_trial"]))
    return "\n".join(lines)


def ablation_markdown(variants: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per variant, one column per task type (with its task count)."""
    first = next(iter(variants.values()))
    counts = dict(first["counts"], overall_cat=first["episodes"])
    header = ["variant", "trials", "checker"] + [f"{c} (n={counts[c]})" for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in variants.items():
        cells = [name, str(m["variant"]["trials"]), m["variant"]["checker"]]
        cells += [f"{m[c + '_accuracy']:.3f}" for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ablation_plot(variants: dict[str, dict[str, Any]], path: str, title: str) -> None:
    """A grouped bar chart of accuracy per task type (x) and variant (bars), written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or used
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(COLUMNS))
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(12, 5))
    for i, (name, m) in enumerate(variants.items()):
        label = f"{name} (trials={m['variant']['trials']}, checker={m['variant']['checker']})"
        values = [m[c + "_accuracy"] for c in COLUMNS]
        bars = ax.bar(x + (i - (len(variants) - 1) / 2) * width, values, width, label=label)
        # Every value is written on its bar, so a score of 0 still shows.
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=6, rotation=90, padding=2)
    first = next(iter(variants.values()))
    counts = dict(first["counts"], overall_cat=first["episodes"])
    ax.set_xticks(x, [f"{c.replace('-', chr(10))}\nn={counts[c]}" for c in COLUMNS], fontsize=8)
    ax.set_ylim(0, 1.15)  # room for the value labels above a bar of 1.0
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.axvline(len(COLUMNS) - 1.5, color="grey", linewidth=0.8)  # the overall score stands apart
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(variants), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
