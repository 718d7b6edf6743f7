"""A training run's settings: `parse_run(config)` turns the ConfigDict of `python -m cmat_jax.train` into
`RunSettings`, checking every setting before anything is built.

The run's own fields: mode ('sft' | 'cmat'), workdir, seed, resume, overwrite. Paths are made absolute here (export
and resume may run elsewhere); `RunSettings.source` is the ConfigDict with those paths, which the run
records as its config.json and a resume compares with. Every key of the config is read by some
settings dataclass (the `distributed` section by cmat_jax/distributed.py, which checks it itself), or
the run is refused: a key that nothing reads would be a silent knob.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Optional

from cmat_jax.settings.cmat import CMAT_SECTIONS, CmatSettings
from cmat_jax.settings.fields import SettingError, choice, flag, integer, text
from cmat_jax.settings.model import LoraSettings, MeshSettings, ModelSettings
from cmat_jax.settings.training import CheckpointSettings, DataSettings, TrainSettings

MODES = ("sft", "cmat")
# Path settings, recorded absolute.
PATH_FIELDS = {"sft": ("model.hf_dir", "data.tokenizer", "data.agent", "data.general"),
               "cmat": ("model.hf_dir", "data.tokenizer", "data.general", "tasks.train", "tasks.eval")}
RUN_FIELDS = ("mode", "workdir", "seed", "resume", "overwrite")
DISTRIBUTED_SECTION = "distributed"  # read and checked by cmat_jax/distributed.py, before any device is used
RUN_SECTIONS = (ModelSettings, LoraSettings, MeshSettings, TrainSettings, DataSettings, CheckpointSettings)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Every setting of an SFT run or (with `cmat`) of a CMAT run, typed and checked."""

    mode: str
    workdir: str  # absolute
    seed: int  # random base init, adapter init, LoRA dropout, the CMAT rollouts' keys and the User's draws
    resume: bool
    overwrite: bool  # a fresh run may replace (delete) the run its workdir holds (training/run_state.py)
    model: ModelSettings
    lora: LoraSettings
    mesh: MeshSettings
    train: TrainSettings
    data: DataSettings
    checkpoint: CheckpointSettings
    cmat: Optional[CmatSettings]  # None in an SFT run
    source: Any = dataclasses.field(compare=False, repr=False)  # the ConfigDict, paths absolute

    def __post_init__(self):
        if self.mode == "sft":
            if self.train.steps < 1:
                raise SettingError(f"train.steps must be an integer >= 1 (an SFT run of 0 steps does nothing), "
                                   f"found {self.train.steps}")
            if not self.data.agent:
                raise SettingError("data.agent is empty; set it to a JSONL file or a TFDS directory built by "
                                   "tools/build_tfds.py")
            return
        if self.data.agent:
            raise SettingError("data.agent is set, but a CMAT run's warm start trains on the oracle's episodes of "
                               "tasks.train; leave data.agent empty (data.general may add general chat data)")
        if self.train.steps == 0 and self.cmat.rl.iterations == 0:
            raise SettingError("train.steps and rl.iterations are both 0, so the run would do nothing; set "
                               "train.steps >= 1 (a warm start) or rl.iterations >= 1")
        self._check_warm_start_settings()

    def _check_warm_start_settings(self) -> None:
        """The CMAT settings that shape or continue the SFT warm start need one (train.steps >= 1) to act on."""
        steps, demo_count = self.train.steps, self.cmat.tasks.demo_count
        if demo_count == 0 and steps > 0:
            raise SettingError(f"tasks.demo_count is 0, so the warm start has no demonstrations, yet train.steps is "
                               f"{steps}; set train.steps=0 or give at least one demonstration")
        if demo_count and steps == 0:
            raise SettingError(f"tasks.demo_count is {demo_count} but train.steps is 0: there is no warm start to "
                               "take demonstrations; set train.steps >= 1 or leave tasks.demo_count unset")
        if self.cmat.rl.sft_twin and steps == 0:
            raise SettingError("rl.sft_twin is true but train.steps is 0: the twin continues the SFT warm start, "
                               "and there is none; set train.steps >= 1 or rl.sft_twin=false")


def parse_run(config) -> RunSettings:
    """The checked settings of a training run's ConfigDict (which is left unchanged), or a SettingError."""
    mode = choice("mode", config.get("mode"), MODES)
    text("workdir", config.get("workdir"), required="set --config.workdir=DIR, the directory of the run")
    source = copy.deepcopy(config)
    for key in PATH_FIELDS[mode]:
        section, name = key.split(".")
        if section in source and source[section].get(name):
            source[section][name] = os.path.abspath(source[section][name])
    _check_every_field_is_read(source, mode)
    cmat = CmatSettings.parse(source) if mode == "cmat" else None
    sections = [section.parse(source) for section in RUN_SECTIONS]
    return RunSettings(mode, os.path.abspath(source.workdir), integer("seed", source.get("seed")),
                       flag("resume", source.get("resume")),
                       flag("overwrite", source.get("overwrite")), *sections, cmat=cmat, source=source)


def _check_every_field_is_read(config, mode: str) -> None:
    sections = RUN_SECTIONS + (CMAT_SECTIONS if mode == "cmat" else ())
    read = set(RUN_FIELDS) | {f"{s.SECTION}.{name}" for s in sections for name in s.fields()}
    for key, value in config.items():
        if key == DISTRIBUTED_SECTION:
            continue
        names = [f"{key}.{name}" for name in value.keys()] if hasattr(value, "keys") else [key]
        for name in names:
            if name not in read:
                hint = " (a CMAT setting: use mode='cmat')" if mode == "sft" else ""
                raise SettingError(f"{name} is set, but a mode={mode!r} run never reads it{hint}; remove it")
