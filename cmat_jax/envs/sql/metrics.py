"""DBBench v0.2 metrics over finished episodes."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from cmat_jax.envs.sql.tasks import SELECT_TYPES

# The accuracies DBBench reports, in its order. "SELECT" covers every type other than INSERT and UPDATE.
REPORTED_TYPES = SELECT_TYPES + ("SELECT", "INSERT", "UPDATE")
CATEGORIES = ("SELECT", "INSERT", "UPDATE")


def _in_group(task_type: str, group: str) -> bool:
    return task_type == group or (group == "SELECT" and task_type not in ("INSERT", "UPDATE"))


def dbbench_metrics(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics from each episode's final info (keys: task_type, correct, status, checker_rejections).

    As in DBBench, a type with no episodes scores 0.0 (its count, reported beside it, is 0), and
    overall_cat_accuracy is the plain mean of the SELECT, INSERT and UPDATE accuracies.
    """
    metrics: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for group in REPORTED_TYPES:
        members = [o for o in outcomes if _in_group(o["task_type"], group)]
        counts[group] = len(members)
        metrics[f"{group}_accuracy"] = sum(bool(o["correct"]) for o in members) / len(members) if members else 0.0
    metrics["overall_cat_accuracy"] = sum(metrics[f"{c}_accuracy"] for c in CATEGORIES) / len(CATEGORIES)
    metrics["counts"] = counts
    metrics["episodes"] = len(outcomes)
    metrics["correct"] = sum(bool(o["correct"]) for o in outcomes)
    metrics["format_failures"] = sum(o["status"] == "agent_validation_failed" for o in outcomes)
    metrics["round_limit_failures"] = sum(o["status"] == "task_limit_reached" for o in outcomes)
    metrics["checker_rejections"] = sum(int(o.get("checker_rejections", 0)) for o in outcomes)
    return metrics
