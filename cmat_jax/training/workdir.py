"""A finished (or running) training workdir -> the tuned model.

The workdir holds the run's config.json and orbax checkpoints of the adapters;
the base is rebuilt from the config exactly as the trainer built it.
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
from cmat_jax.training.checkpoint import DEFAULT_ROLE, Checkpointer, checkpoint_directory


def read_run_config(workdir: str) -> config_dict.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; expected the workdir of a `python -m cmat_jax.train` run")
    with open(path, encoding="utf-8") as f:
        return config_dict.ConfigDict(json.load(f))


def saved_roles(workdir: str, step: Optional[int] = None) -> list[str]:
    """The roles whose adapters checkpoint `step` (default: the latest) holds: ['assistant'] for SFT runs,
    also 'checker' for CMAT runs with a learned Checker."""
    has_config = os.path.isfile(os.path.join(workdir, "config.json"))
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
