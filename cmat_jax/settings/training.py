"""The update settings (train.*), the SFT data (data.*) and checkpoints (checkpoint.*).

In a CMAT run `train` and `data` describe the SFT warm start (train.steps 0: none); the warm start's own
shares of recovery and reflection demonstrations are `WarmStartSettings` (train.recovery_fraction,
train.reflection_fraction), read only in that mode.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from cmat_jax.settings.fields import Section, SettingError, choice, flag, fraction, integer, number, text
from cmat_jax.settings.model import DTYPE_NAMES

DECAYS = ("cosine", "linear", "constant")  # the learning-rate schedules of training/optimizer.py
NONFINITE_MODES = ("stop", "skip")  # what a non-finite loss or gradient does
DATA_MODES = ("packed", "bucketed")  # data/batching.py MODES
OVERLONG = ("truncate", "drop")  # data/batching.py OVERLONG


@dataclasses.dataclass(frozen=True)
class TrainSettings(Section):
    """The optimizer (AdamW over the adapters), its learning-rate schedule and the update step."""

    SECTION = "train"
    steps: int
    learning_rate: float
    warmup_steps: int
    decay: str
    end_lr_ratio: float
    weight_decay: float
    max_grad_norm: float  # <= 0: no clipping
    b1: float
    b2: float
    eps: float
    microbatches: int
    loss_chunk_size: int  # 0: the whole sequence at once
    adapter_dtype: str
    nonfinite: str
    log_every: int

    def __post_init__(self):
        self.check("steps", integer, 0)
        self.check("learning_rate", number, low=0.0, low_open=True)
        self.check("warmup_steps", integer, 0)
        self.check("decay", choice, DECAYS)
        self.check("end_lr_ratio", number, low=0.0, high=1.0, what="the final learning rate / the peak")
        self.check("weight_decay", number, low=0.0)
        self.check("max_grad_norm", number, what="<= 0: no clipping")
        for name in ("b1", "b2"):
            self.check(name, number, low=0.0, high=1.0, high_open=True)
        self.check("eps", number, low=0.0, low_open=True)
        self.check("microbatches", integer, 1)
        self.check("loss_chunk_size", integer, 0, what="positions per loss chunk; 0: all at once")
        self.check("adapter_dtype", choice, DTYPE_NAMES)
        self.check("nonfinite", choice, NONFINITE_MODES)
        self.check("log_every", integer, 1, what="steps between metric records")

    @property
    def chunk_size(self) -> Optional[int]:
        return self.loss_chunk_size or None


@dataclasses.dataclass(frozen=True)
class WarmStartSettings(Section):
    """A CMAT run's warm-start demonstrations: the shares played as recoveries and as reflections."""

    SECTION = "train"
    recovery_fraction: float
    reflection_fraction: float

    def __post_init__(self):
        self.check("recovery_fraction", fraction, "the share of warm-start tasks played with a mistaken first "
                   "statement")
        self.check("reflection_fraction", fraction, "the share of warm-start tasks played as a failed trial, its "
                   "reflection and the retry")


@dataclasses.dataclass(frozen=True)
class DataSettings(Section):
    """SFT data: sources, mixture, batching; the tokenizer (empty: the model's, else the bundled one)."""

    SECTION = "data"
    tokenizer: str
    agent: str
    general: str
    agent_fraction: float
    split: str
    batch_size: int
    seq_len: int
    mode: str
    bucket_lengths: Optional[tuple]
    overlong: str
    seed: int

    def __post_init__(self):
        for name in ("tokenizer", "agent", "general", "split"):
            self.check(name, text)
        self.check("agent_fraction", fraction, "the share of examples drawn from the agent data")
        self.check("batch_size", integer, 1)
        self.check("seq_len", integer, 1)
        self.check("mode", choice, DATA_MODES)
        self.check("overlong", choice, OVERLONG)
        self.check("seed", integer)
        if self.bucket_lengths:
            buckets = tuple(integer("data.bucket_lengths", b, 1) for b in self.bucket_lengths)
            object.__setattr__(self, "bucket_lengths", buckets)
            if self.mode != "bucketed":
                raise SettingError(f"data.bucket_lengths is set but data.mode is {self.mode!r}; buckets apply only "
                                   "to --config.data.mode=bucketed")
        else:
            object.__setattr__(self, "bucket_lengths", None)
        if self.general and self.agent_fraction >= 1.0:
            raise SettingError("data.general is set but data.agent_fraction is 1.0, so it would never be drawn; "
                               "lower data.agent_fraction or leave data.general empty")
        if not self.general and self.agent_fraction != 1.0:
            raise SettingError(f"data.agent_fraction is {self.agent_fraction} but data.general is empty; give a "
                               "general data set or set data.agent_fraction to 1.0")


@dataclasses.dataclass(frozen=True)
class CheckpointSettings(Section):
    """orbax checkpoints: how often, how many kept, written in the background, where."""

    SECTION = "checkpoint"
    every: int
    keep: int
    async_save: bool
    directory: str  # empty: <workdir>/checkpoints

    def __post_init__(self):
        self.check("every", integer, 1)
        self.check("keep", integer, 1)
        self.check("async_save", flag)
        self.check("directory", text)
