"""The model a run tunes (model.*), its LoRA adapters (lora.*) and the device mesh (mesh.*)."""

from __future__ import annotations

import dataclasses
import re
from typing import Union

from cmat_jax.models.config import preset as model_preset
from cmat_jax.settings.fields import Section, SettingError, choice, flag, integer, number, text

# Each name list is the registry of the module that uses it (tests/test_settings.py holds them equal).
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # training/build.py
REMAT_NAMES = ("none", "full", "dots", "dots_no_batch", "save_linear")  # models/transformer.py REMAT_POLICIES
ATTENTION_IMPLS = ("auto", "xla", "cudnn")  # models/attention.py
DECODE_ATTENTION_IMPLS = ("xla", "pallas")  # models/decode_attention.py
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # models/lora.py TARGET_NAMES


@dataclasses.dataclass(frozen=True)
class ModelSettings(Section):
    """The frozen base: a Hugging Face directory, or a seeded random model of a preset's shape."""

    SECTION = "model"
    hf_dir: str
    random_init: bool
    preset: str
    init_std: float
    dtype: str
    param_dtype: str
    remat: str
    attention_impl: str
    decode_attention: str

    def __post_init__(self):
        self.check("hf_dir", text)
        self.check("random_init", flag)
        self.check("preset", text)
        try:
            model_preset(self.preset)
        except ValueError as e:
            raise SettingError(f"model.preset: {e}") from None
        self.check("init_std", number, low=0.0, low_open=True, what="the random base's weight std")
        for name in ("dtype", "param_dtype"):
            self.check(name, choice, DTYPE_NAMES)
        self.check("remat", choice, REMAT_NAMES)
        self.check("attention_impl", choice, ATTENTION_IMPLS)
        self.check("decode_attention", choice, DECODE_ATTENTION_IMPLS)
        if self.hf_dir and self.random_init:
            raise SettingError("model.hf_dir and model.random_init are both set; choose one")
        if not self.hf_dir and not self.random_init:
            raise SettingError("model.hf_dir is empty: set --config.model.hf_dir=/path/to/a/local/model, or "
                               f"--config.model.random_init=true to tune a randomly initialised {self.preset!r} model")


@dataclasses.dataclass(frozen=True)
class LoraSettings(Section):
    """One LoRA adapter per tuned role: rank, alpha, dropout and the projections it adapts."""

    SECTION = "lora"
    rank: int
    alpha: float
    dropout: float
    targets: Union[str, tuple]  # comma-separated names, a sequence of them, or one regex such as "q|v"

    def __post_init__(self):
        self.check("rank", integer, 1)
        self.check("alpha", number, low=0.0, low_open=True, what="the adapters' scale is alpha / rank")
        self.check("dropout", number, low=0.0, high=1.0, high_open=True)
        targets = self.target_names
        if isinstance(targets, str):
            try:
                chosen = [t for t in LORA_TARGETS if re.fullmatch(targets, t)]
            except re.error as e:
                raise SettingError(f"lora.targets is {targets!r}, not a valid regex ({e})") from None
            unknown = [] if chosen else [targets]
        else:
            unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets:
            raise SettingError(f"lora.targets is {self.targets!r}; expected names among {', '.join(LORA_TARGETS)} "
                               "(comma-separated) or one regex matching some of them")

    @property
    def target_names(self) -> Union[str, list[str]]:
        """The projection names as a list, or the one regex (a string without commas)."""
        if isinstance(self.targets, str) and "," in self.targets:
            return [t.strip() for t in self.targets.split(",") if t.strip()]
        return self.targets if isinstance(self.targets, str) else list(self.targets)


@dataclasses.dataclass(frozen=True)
class MeshSettings(Section):
    """The device mesh ('data', 'fsdp', 'tensor'); fsdp -1 takes every remaining device."""

    SECTION = "mesh"
    data: int
    fsdp: int
    tensor: int

    def __post_init__(self):
        self.check("data", integer, 1)
        self.check("tensor", integer, 1)
        self.check("fsdp", integer, -1, what="-1: every remaining device")
        if self.fsdp == 0:
            raise SettingError("mesh.fsdp must be an integer >= 1, or -1 for every remaining device, found 0")
