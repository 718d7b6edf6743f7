"""Plays DBBench tasks through the batched rollout engine and reports DBBench's metrics.

    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=oracle
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.hf_dir=DIR
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.workdir=W
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.preset=tiny \
        --config.ablations=true

The agent is the scripted oracle or a model with greedy decoding (every field
and default: cmat_jax/eval_config.py). A model plays the Assistant, writes the
reflections after failed trials, and is the learned Checker: a model from
model.hf_dir or model.preset has no adapter, so all three roles share its
weights. A training run's workdir (SFT or CMAT) gives the Assistant its trained
adapter; the learned Checker plays with the run's Checker adapter when the
checkpoint holds one (a CMAT run with checker.train), else with the run's
frozen base (adapters off).

An episode is a task played for up to reflection.trials trials; it counts as
correct if any of its trials is correct (see cmat_jax/eval_report.py, which
also reports each trial's accuracy). With ablations=true the CMAT paper's
Figure 3 variants run on the same tasks and model: 'full' (the configured
trials and Checker), 'no_reflection' (trials=1) and 'no_checker'
(checker=off). Greedy decoding makes every variant deterministic.

Writes to <workdir>: metrics.json (with ablations: every variant under
"variants"), episodes.jsonl (one line per trial: Trajectory.to_json() plus the
"variant" it belongs to) and, with ablations, ablations.md and ablations.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Optional

import ml_collections
from absl import app
from flax import nnx
from ml_collections import config_flags

from cmat_jax import cli, eval_config, eval_report
from cmat_jax import sharding as sharding_lib
from cmat_jax.agents.memory import ReflectionMemory
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.replies import ModelReplies, ScriptedReplies
from cmat_jax.agents.trajectory import CHECKER_ROLE, Trajectory
from cmat_jax.agents.user import User
from cmat_jax.data.tokenizer import load_tokenizer
from cmat_jax.demos.oracle import OracleAgent
from cmat_jax.envs.sql.tasks import load_tasks
from cmat_jax.models.config import preset
from cmat_jax.rollout import build_rollout_engine
from cmat_jax.sampling.sampler import Sampler, SamplerConfig
from cmat_jax.settings.evaluation import EvalModel, EvalSettings, Variant
from cmat_jax.settings.model import LoraSettings, ModelSettings
from cmat_jax.training import build
from cmat_jax.training.config import default_config as run_default_config
from cmat_jax.training.workdir import load_trained_model, saved_roles

format_table = eval_report.format_table  # the printed table of one variant

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file, e.g. configs/eval_dbbench.py.")


@dataclasses.dataclass
class Players:
    """The reply sources of the roles, with what they need to run."""

    assistant: Any  # also writes the reflections
    checker: Optional[Any]  # the learned Checker's reply source (None: the oracle)
    tokenizer: Optional[Any]
    weights: dict[str, Any]
    max_len: Optional[int]
    description: Optional[dict[str, Any]]  # the model, recorded in metrics.json (None: the oracle)


def make_players(settings: EvalSettings) -> Players:
    if settings.agent == "oracle":
        return Players(ScriptedReplies(OracleAgent), None, None, {}, None, None)
    mesh = sharding_lib.make_mesh(1, -1, 1)  # the weights sharded over every device (fsdp)
    model, tokenizer, description = load_model(settings.model, mesh)
    sampler_config = SamplerConfig(max_len=settings.max_len or None, max_batch=settings.batch_size or None,
                                   unroll_decode_layers=settings.unroll_decode_layers)
    sampler = Sampler(model, sampler_config, mesh=mesh)
    assistant = ModelReplies(sampler, tokenizer)
    checker, checker_state = assistant, nnx.state(model)
    if settings.source == "workdir" and settings.needs_learned_checker:
        workdir, step = settings.model.workdir, description["step"]
        if CHECKER_ROLE in saved_roles(workdir, step):  # the run trained a Checker adapter
            checker_state = nnx.state(load_trained_model(workdir, step=step, mesh=mesh, role=CHECKER_ROLE)[0])
        else:  # the run trained the Assistant's adapter only: the Checker is the frozen base (adapters off)
            checker = ModelReplies(Sampler(model, dataclasses.replace(sampler_config, use_lora=False),
                                           mesh=mesh), tokenizer)
    description.update(max_len=sampler.max_len, sampler_batch=sampler.max_batch)
    return Players(assistant, checker, tokenizer, {"assistant": nnx.state(model), "checker": checker_state},
                   sampler.max_len, description)


def load_model(m: EvalModel, mesh):
    """(model, tokenizer, description for metrics.json) from model.hf_dir, model.workdir or model.preset."""
    if m.source == "hf_dir":
        from cmat_jax.checkpoints.hf import load_hf_model  # safetensors readers: only this source needs them

        model = load_hf_model(m.hf_dir, dtype=build.DTYPES[m.dtype], param_dtype=build.DTYPES[m.param_dtype],
                              mesh=mesh)
        return model, load_tokenizer(m.hf_dir), {"hf_dir": os.path.abspath(m.hf_dir), "dtype": m.dtype}
    if m.source == "workdir":
        model, run_config, step = load_trained_model(m.workdir, step=m.step or None, mesh=mesh)
        tokenizer = load_tokenizer(build.tokenizer_path(run_config))
        return model, tokenizer, {"workdir": os.path.abspath(m.workdir), "mode": run_config.get("mode", "sft"),
                                  "step": step, "dtype": run_config.model.dtype}
    vocab_size = preset(m.preset).vocab_size
    tokenizer = load_tokenizer()
    if len(tokenizer) > vocab_size:
        raise ValueError(f"model.preset={m.preset!r} has {vocab_size} token ids, fewer than the bundled "
                         f"tokenizer's {len(tokenizer)}; choose a preset with a larger vocabulary")
    run = run_default_config()  # the trainer's random base, built as `python -m cmat_jax.train` builds it
    run.model.random_init, run.model.preset, run.model.init_std = True, m.preset, m.init_std
    run.model.dtype, run.model.param_dtype = m.dtype, m.param_dtype
    model = build.build_model(ModelSettings.parse(run), LoraSettings.parse(run), m.seed, mesh)
    return model, tokenizer, {"preset": m.preset, "seed": m.seed, "init_std": m.init_std, "dtype": m.dtype}


def evaluate(config: ml_collections.ConfigDict) -> dict[str, Any]:
    settings = eval_config.resolve(config)
    tasks = load_tasks(settings.tasks)
    if settings.max_tasks:
        tasks = tasks[: settings.max_tasks]
    os.makedirs(settings.workdir, exist_ok=True)  # before the model and the episodes, so a bad workdir costs no run
    players = make_players(settings)
    user = User(tasks, seed=0, curriculum=False,
                instructions=SHORT_INSTRUCTIONS if settings.instructions == "short" else None)

    results: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for variant in settings.variants:
        trajectories, metrics = run_variant(settings, players, user, tasks, variant)
        results[variant.name] = metrics
        records += [{"variant": variant.name, **t.to_json()} for t in trajectories]

    common = {"agent": settings.agent, "tasks": settings.tasks, "model": players.description}
    metrics = {**common, **results["full"]} if len(results) == 1 else {**common, "variants": results}
    with open(os.path.join(settings.workdir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(settings.workdir, "episodes.jsonl"), "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if len(results) > 1:
        with open(os.path.join(settings.workdir, "ablations.md"), "w", encoding="utf-8") as f:
            f.write(eval_report.ablation_markdown(results))
        title = f"DBBench accuracy by variant: {_describe(players.description)}, {len(tasks)} tasks"
        eval_report.ablation_plot(results, os.path.join(settings.workdir, "ablations.png"), title)
    return metrics


def run_variant(settings: EvalSettings, players: Players, user: User, tasks,
                variant: Variant) -> tuple[list[Trajectory], dict[str, Any]]:
    """One variant's trajectories (every trial) and metrics, with a progress bar over its episodes."""
    from tqdm import tqdm

    engine = build_rollout_engine(settings.engine(variant, players.max_len), assistant=players.assistant,
                                  tokenizer=players.tokenizer, checker=players.checker, reflector=players.assistant)
    # The bar counts trials, so it moves within a trial as episodes end; an episode solved early counts its
    # remaining trials at once. The postfix counts whole episodes and their running accuracy.
    bar = tqdm(total=len(tasks) * variant.trials, desc=variant.name, unit="trial", dynamic_ncols=True)
    tally = {"done": 0, "correct": 0}

    def on_finish(trajectory: Trajectory) -> None:
        last = trajectory.correct or trajectory.trial + 1 == variant.trials  # the episode is over
        bar.update(variant.trials - trajectory.trial if trajectory.correct else 1)
        if last:
            tally["done"] += 1
            tally["correct"] += trajectory.correct
            bar.set_postfix(episodes=f"{tally['done']}/{len(tasks)}",
                            accuracy=f"{tally['correct'] / tally['done']:.3f}")

    start = time.perf_counter()
    try:
        trajectories = engine.run(tasks, weights=players.weights, memory=ReflectionMemory(settings.omega),
                                  user=user, on_finish=on_finish)
    finally:
        bar.close()
    metrics = eval_report.variant_metrics(trajectories, variant.trials)
    metrics["variant"] = {"name": variant.name, "trials": variant.trials, "checker": variant.checker,
                          "omega": settings.omega if variant.trials > 1 else None,
                          "max_new_tokens": settings.max_new_tokens or None,
                          "reflection_max_new_tokens":
                              settings.reflection_max_new_tokens if variant.trials > 1 else None,
                          "instructions": settings.instructions}
    metrics["rollout"] = {**dataclasses.asdict(engine.last_stats), "wall_s": time.perf_counter() - start}
    return trajectories, metrics


def _describe(description: Optional[dict[str, Any]]) -> str:
    if description is None:
        return "the oracle"
    return ", ".join(f"{k}={v}" for k, v in description.items() if k in ("preset", "hf_dir", "workdir", "step"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("pass --config configs/eval_dbbench.py")
    try:
        metrics = evaluate(config)
    except (ValueError, OSError) as e:  # bad config, task file, model or workdir: the message says what to fix
        raise SystemExit(f"error: {e}") from None
    if "variants" in metrics:
        print(eval_report.ablation_markdown(metrics["variants"]), end="")
        print(f"wrote {os.path.join(config.workdir, 'ablations.md')} and ablations.png")
    else:
        print(format_table(metrics))
    print(f"wrote {os.path.join(config.workdir, 'metrics.json')} and episodes.jsonl")


if __name__ == "__main__":
    cli.run(main)  # flag mistakes (unknown fields, wrong types) as one error line
