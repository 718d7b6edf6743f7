"""LoRA: settings, the adapter variable type, and merging.

Adapters live inside the projection modules (`layers.Linear`) as variables of
type `LoRA`, a subclass of `nnx.LoRAParam`; optimizers and checkpoints select
them by that type, so the frozen base never gets gradients or optimizer state.
The output is `x @ W + (dropout(x) @ A @ B) * alpha / rank`, with B = 0 at init
(LoRA paper), so a fresh adapter leaves the model unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence, Union

import jax
import jax.numpy as jnp
from flax import nnx

# Projection names, in the order Hugging Face/PEFT modules are usually listed.
TARGET_NAMES = ("q", "k", "v", "o", "gate", "up", "down")


class LoRA(nnx.LoRAParam):
    """A trainable low-rank adapter matrix (the only trainable variable type)."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    # A list of projection names (subset of TARGET_NAMES) or one regex matched
    # against them, e.g. "q|v" or ".*".
    targets: Union[Sequence[str], str] = TARGET_NAMES

    def __post_init__(self):
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        self.target_set()  # validates

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def target_set(self) -> frozenset:
        if isinstance(self.targets, str):
            pattern = re.compile(self.targets)
            chosen = {t for t in TARGET_NAMES if pattern.fullmatch(t)}
            if not chosen:
                raise ValueError(f"LoRA target regex {self.targets!r} matches none of {TARGET_NAMES}")
            return frozenset(chosen)
        unknown = set(self.targets) - set(TARGET_NAMES)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from {TARGET_NAMES}")
        if not self.targets:
            raise ValueError(f"LoRA targets are empty; choose from {TARGET_NAMES}")
        return frozenset(self.targets)

    def applies_to(self, name: str) -> bool:
        return name in self.target_set()


def lora_delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The dense update A @ B * scale that merging adds to a kernel (float32); batched over leading axes."""
    return jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32)) * scale


def _holds_adapter(node) -> bool:
    """An adapted projection: a module holding `kernel`, `lora_a`/`lora_b` (LoRA variables) and `lora_scale`
    (layers.Linear is one). Recognised by its variables, not its class, so this module imports no layer."""
    return isinstance(node, nnx.Module) and isinstance(getattr(node, "lora_a", None), LoRA)


def merge_lora(model: nnx.Module) -> None:
    """Folds every adapter into its base kernel in place and removes the adapter.

    After merging, the model computes the same function with adapters gone
    (no LoRA variables remain), e.g. for export or fast decoding.
    """
    for _, module in nnx.iter_graph(model):
        if _holds_adapter(module):
            kernel = module.kernel[...]
            # matmul batches over the leading layer axis of stacked adapters
            delta = lora_delta(module.lora_a[...], module.lora_b[...], module.lora_scale)
            module.kernel.set_value((kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
            module.lora_a = None
            module.lora_b = None
