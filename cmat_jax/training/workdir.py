"""A finished (or running) training workdir: what it holds, and the tuned model.

The workdir holds the run's config.json (the record of its settings),
metrics.jsonl, and orbax checkpoints of the adapters (in
checkpoint.directory, by default <workdir>/checkpoints). `saved_config` reads
config.json with one-line errors naming the file; `saved_steps` lists the steps
a checkpoint directory holds without opening it with orbax; `resume_hint` is
the sentence a stopped run ends with. `load_trained_model` rebuilds the base
from the config exactly as the trainer built it and restores the adapters.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import jax
from etils import epath
from flax import nnx
from ml_collections import config_dict

from cmat_jax import sharding as sharding_lib
from cmat_jax.models.lora import LoRA
from cmat_jax.models.transformer import Transformer
from cmat_jax.settings.model import LoraSettings, ModelSettings
from cmat_jax.settings.training import TrainSettings
from cmat_jax.training import build
from cmat_jax.training.checkpoint import DEFAULT_ROLE, Checkpointer, checkpoint_directory, checkpoint_path
from cmat_jax.training.config import cmat_config, default_config
from cmat_jax.training.metrics import METRICS_FILE


CONFIG_FILE = "config.json"
START_OVER = "start over with --config.resume=false --config.overwrite=true"


def saved_config(workdir: str) -> dict:
    """The run's config.json as a dict: FileNotFoundError when it is missing, ValueError when it is not a
    run config (each naming the file)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; expected the workdir of a `python -m cmat_jax.train` run")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), dict) for k in ("train", "checkpoint")):
        raise ValueError(f"{path} is not a run config (expected a JSON object with the train and checkpoint "
                         "sections that `python -m cmat_jax.train` writes)")
    return saved


def read_run_config(workdir: str) -> config_dict.ConfigDict:
    """saved_config as a ConfigDict, as the run had it. A field added to the project after the run was saved
    takes its default (new settings default to the behaviour that came before them), so older runs still load."""
    saved = saved_config(workdir)
    return config_dict.ConfigDict(_with_missing(saved, default_settings(saved.get("mode", "sft"))))


def default_settings(mode: str) -> dict:
    """The code's default config of a run mode, as a plain dict."""
    return json.loads((cmat_config() if mode == "cmat" else default_config()).to_json())


def _with_missing(saved: dict, defaults: dict) -> dict:
    """`saved` with every key of `defaults` it lacks, at any depth."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_missing(merged[key], value)
    return merged


def saved_steps(directory: str) -> list[int]:
    """The steps whose directories `directory` holds (orbax's complete steps: named by their number)."""
    path = epath.Path(directory)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir())


def run_records(workdir: str, directory: str, latest: Optional[int]) -> tuple[list[str], Optional[str]]:
    """What `workdir` holds of a run, in words (checkpoints in `directory`, metrics records, a config.json
    that is unreadable or names checkpoints elsewhere), and that other checkpoint directory if there is one."""
    records = [f"checkpoints up to step {latest} in {directory}"] if latest is not None else []
    metrics = os.path.join(workdir, METRICS_FILE)
    if os.path.isfile(metrics) and os.path.getsize(metrics):
        with open(metrics, "rb") as f:
            records.append(f"{sum(1 for line in f if line.strip())} lines of {METRICS_FILE}")
    elsewhere = None
    if os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        try:
            recorded = saved_config(workdir)["checkpoint"].get("directory") or os.path.join(workdir, "checkpoints")
        except ValueError as e:
            records.append(f"a {CONFIG_FILE} that cannot be read ({e})")
        else:
            steps = saved_steps(recorded) if checkpoint_path(recorded) != directory else []
            if steps:
                elsewhere = recorded
                records.append(f"a {CONFIG_FILE} whose checkpoint.directory {recorded} holds steps {steps}")
    return records, elsewhere


def config_for_resume(workdir: str) -> dict:
    """config.json, which a resume is checked against; its absence or damage refused with the fix."""
    try:
        return saved_config(workdir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"cannot resume {workdir}: {os.path.join(workdir, CONFIG_FILE)}, the record of the run's settings, is "
            "missing, so this run's settings cannot be checked against the run's; put the file back (e.g. from a "
            f"copy of the workdir), or {START_OVER}") from None
    except ValueError as e:
        raise ValueError(f"cannot resume {workdir}: {e}; it is the record of the run's settings: put back a good "
                         f"copy, or {START_OVER}") from None


def resume_hint(config, workdir: str) -> str:
    """Where a stopped run goes on from, as a sentence: its latest checkpoint, or that there is none."""
    directory = checkpoint_directory(config, workdir)
    steps = saved_steps(directory)
    if steps:
        return (f"The latest checkpoint is step {steps[-1]} in {directory}: continue with the same command and "
                "--config.resume=true.")
    again = "start over with --config.overwrite=true" if run_records(workdir, checkpoint_path(directory), None)[0] \
        else "run the same command again to start over"
    return (f"No checkpoint is in {directory} yet (checkpoint.every is {config.checkpoint.every}): there is "
            f"nothing to resume; {again}.")


def saved_roles(workdir: str, step: Optional[int] = None) -> list[str]:
    """The roles whose adapters checkpoint `step` (default: the latest) holds: ['assistant'] for SFT runs,
    also 'checker' for CMAT runs with a learned Checker."""
    has_config = os.path.isfile(os.path.join(workdir, CONFIG_FILE))
    directory = checkpoint_directory(read_run_config(workdir), workdir) if has_config else \
        os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(directory, every=1, keep=1 << 30, async_save=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory} holds no checkpoint")
        return checkpointer.saved_roles(max(steps) if step is None else step)[0]
    finally:
        checkpointer.close()


def load_trained_model(workdir: str, *, step: Optional[int] = None, mesh=None, exact_math: bool = False,
                       role: str = DEFAULT_ROLE) -> tuple[Transformer, config_dict.ConfigDict, int]:
    """(model with `role`'s adapters of checkpoint `step` (default: the latest), run config, step).

    `exact_math` computes in float32 with the exact XLA attention path whatever
    the run used (the weights stay as stored), for comparisons at 1e-4.
    """
    config = read_run_config(workdir)
    if exact_math:
        config.model.dtype = "float32"
        config.model.attention_impl = "xla"
    mesh = mesh if mesh is not None else sharding_lib.make_mesh(1, -1, 1)
    directory = checkpoint_directory(config, workdir)
    if not epath.Path(directory).is_dir():
        raise FileNotFoundError(f"{directory} does not exist; the run saved no checkpoint yet")
    checkpointer = Checkpointer(directory, every=1, keep=1 << 30, async_save=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory} holds no checkpoint")
        step = max(steps) if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"{directory} has no checkpoint for step {step}; saved steps: {sorted(steps)}")
        model = build.build_model(ModelSettings.parse(config), LoraSettings.parse(config), config.seed, mesh)
        graphdef, lora, frozen = nnx.split(model, LoRA, ...)
        adapter_dtype = build.DTYPES[TrainSettings.parse(config).adapter_dtype]
        lora = jax.tree.map(lambda x: x.astype(adapter_dtype), lora)
        roles = checkpointer.saved_roles(step)[0]
        if role not in roles:
            raise ValueError(f"checkpoint {step} of {workdir} holds adapters of {roles}, not of role {role!r}")
        lora = checkpointer.restore_adapters(step, lora, sharding_lib.state_shardings(lora, mesh), role=role)
    finally:
        checkpointer.close()
    return nnx.merge(graphdef, lora, frozen), config, step
