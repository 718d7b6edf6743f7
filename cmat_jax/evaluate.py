"""Runs an agent on DBBench tasks and reports DBBench's metrics.

    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.tasks=<jsonl> --config.agent=oracle

Writes <workdir>/metrics.json and <workdir>/episodes.jsonl (one line per task) and prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import ml_collections
from absl import app
from ml_collections import config_flags

from cmat_jax.agents.oracle import OracleAgent
from cmat_jax.envs.base import Agent, Episode, run_episode
from cmat_jax.envs.sql.database import Limits
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.metrics import REPORTED_TYPES, dbbench_metrics
from cmat_jax.envs.sql.tasks import load_tasks

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file, e.g. configs/eval_dbbench.py.")

# Agents by name: each entry builds an agent from the whole config.
AGENTS: dict[str, Callable[[ml_collections.ConfigDict], Agent]] = {
    "oracle": lambda config: OracleAgent(),
}


def make_agent(config: ml_collections.ConfigDict) -> Agent:
    if config.agent not in AGENTS:
        raise ValueError(f"config.agent is {config.agent!r}; registered agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[config.agent](config)


def make_env(config: ml_collections.ConfigDict) -> SqlEnv:
    limits = Limits(
        timeout_s=config.timeout_s,
        max_output_chars=config.max_output_chars,
        heap_limit_bytes=int(config.heap_limit_mib) << 20,
    )
    return SqlEnv(SqlEnvConfig(max_rounds=config.max_rounds, checker=config.checker, limits=limits))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def episode_record(episode: Episode) -> dict[str, Any]:
    return {
        **episode.final_info,
        "messages": [dataclasses.asdict(m) for m in episode.messages],
        "steps": [{k: _jsonable(v) for k, v in info.items()} for info in episode.steps],
    }


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'type':<18} {'n':>4} {'accuracy':>9}", "-" * 33]
    for group in REPORTED_TYPES:
        lines.append(f"{group:<18} {metrics['counts'][group]:>4} {metrics[group + '_accuracy']:>9.3f}")
    lines.append("-" * 33)
    lines.append(f"{'overall_cat':<18} {metrics['episodes']:>4} {metrics['overall_cat_accuracy']:>9.3f}")
    lines.append(
        f"format failures {metrics['format_failures']}, round-limit failures {metrics['round_limit_failures']}, "
        f"checker rejections {metrics['checker_rejections']}"
    )
    return "\n".join(lines)


def evaluate(config: ml_collections.ConfigDict) -> dict[str, Any]:
    if not config.tasks:
        raise ValueError("config.tasks is empty; pass --config.tasks=<path to a DBBench .jsonl file>")
    tasks = load_tasks(config.tasks)
    agent = make_agent(config)
    env = make_env(config)
    os.makedirs(config.workdir, exist_ok=True)  # before the episodes, so a bad workdir costs no run
    episodes = [run_episode(env, agent, task) for task in tasks]
    metrics = dbbench_metrics([episode.final_info for episode in episodes])
    metrics.update(agent=config.agent, tasks=os.path.abspath(config.tasks))

    os.makedirs(config.workdir, exist_ok=True)
    with open(os.path.join(config.workdir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(config.workdir, "episodes.jsonl"), "w", encoding="utf-8") as f:
        for episode in episodes:
            f.write(json.dumps(episode_record(episode), ensure_ascii=False) + "\n")
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("pass --config configs/eval_dbbench.py")
    try:
        metrics = evaluate(config)
    except (ValueError, OSError) as e:  # bad config, task file or workdir: the message says what to fix
        raise SystemExit(f"error: {e}") from None
    print(format_table(metrics))
    print(f"wrote {os.path.join(config.workdir, 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
