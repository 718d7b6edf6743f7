"""Training segments -> fixed-shape RL batches, packed exactly as SFT batches are.

A `Segment` is the full token record of one append-only context of one role:
every id the model saw or produced in it, a loss mask that is 1 only on the
tokens the tuned role sampled, the sampler's log-prob of each of those tokens
and the advantage each is trained with. Everything else in the record
(instructions, observations, Checker verdicts, memory text) has mask 0.

`pack_segments` shifts each segment like an SFT example (inputs ids[:-1],
targets ids[1:]; mask, log-probs and advantages of the targets) and places it
with the SFT packer (`data.batching.PackedBatch`): each segment into the first
row with room, a new batch when none has. Each batch is a dict of [rows,
seq_len] numpy arrays: the SFT keys (tokens, targets, loss_mask, segment_ids,
positions) plus
  old_logprobs  float32  the sampler's log-prob of each target (0 where not trained)
  advantages    float32  the advantage of each target (0 where not trained)
A segment longer than seq_len + 1 tokens is an error, never cut: a cut would
train a context other than the one the sampler saw. Segments without a trained
target are left out (they would add nothing to the loss or the KL term).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from cmat_jax.data.batching import BatchSpec, PackedBatch, to_training_example
from cmat_jax.training.step import BATCH_KEYS

RL_EXTRA_KEYS = ("old_logprobs", "advantages")
RL_BATCH_KEYS = BATCH_KEYS + RL_EXTRA_KEYS


@dataclasses.dataclass(frozen=True)
class Segment:
    """One append-only context; all four arrays have the same length L.

    ids        int32[L]    the token record
    loss_mask  int32[L]    1 on tokens the tuned role sampled
    logprobs   float32[L]  the sampler's log-prob of ids[i] where loss_mask[i] == 1 (else ignored)
    advantages float32[L]  the advantage of ids[i] where loss_mask[i] == 1 (else ignored)
    """

    ids: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    advantages: np.ndarray

    def __post_init__(self):
        for name, dtype in (("ids", np.int32), ("loss_mask", np.int32), ("logprobs", np.float32),
                            ("advantages", np.float32)):
            value = np.asarray(getattr(self, name))
            if value.ndim != 1:
                raise ValueError(f"Segment.{name} must be one-dimensional, found shape {value.shape}")
            object.__setattr__(self, name, value.astype(dtype))
        lengths = {name: len(getattr(self, name)) for name in ("ids", "loss_mask", "logprobs", "advantages")}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Segment arrays must have one length; found {lengths}")
        if self.ids.size and self.ids.min() < 0:
            raise ValueError(f"Segment.ids holds a negative id ({self.ids.min()})")
        if not np.isin(self.loss_mask, (0, 1)).all():
            raise ValueError("Segment.loss_mask must hold only 0 and 1")
        trained = self.loss_mask > 0
        if trained.any() and trained[0]:
            raise ValueError("Segment.loss_mask[0] is 1, but the first token has no context to be sampled from; "
                             "a segment starts with its prompt")
        bad = trained & ~(np.isfinite(self.logprobs) & (self.logprobs <= 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"Segment.logprobs[{i}] is {self.logprobs[i]} on a trained token; a sampler log-prob "
                             "is finite and <= 0")
        if not np.isfinite(self.advantages[trained]).all():
            raise ValueError("Segment.advantages holds a non-finite value on a trained token")

    def __len__(self) -> int:
        return len(self.ids)


def pack_segments(segments: Sequence[Segment], *, rows: int, seq_len: int, pad_id: int = 0) -> list[dict]:
    """Fixed-shape [rows, seq_len] batches holding every segment with a trained token, in order.

    Raises ValueError naming the lengths when a segment has more than seq_len + 1 tokens.
    """
    spec = BatchSpec(batch_size=rows, seq_len=seq_len, pad_id=pad_id)
    batches: list[dict] = []
    batch = PackedBatch(rows, seq_len, pad_id, RL_EXTRA_KEYS)
    for index, segment in enumerate(segments):
        if not isinstance(segment, Segment):
            raise TypeError(f"segment {index} is a {type(segment).__name__}; expected a cmat_jax.rl.rows.Segment")
        if len(segment) > seq_len + 1:
            raise ValueError(
                f"segment {index} has {len(segment)} tokens, more than seq_len + 1 = {seq_len + 1}; raise the row "
                "length (rl.seq_len) to at least the sampler's context, so no context is cut"
            )
        example = to_training_example(segment.ids, segment.loss_mask, spec,
                                      extras={"old_logprobs": segment.logprobs, "advantages": segment.advantages})
        if example is None:  # no trained target
            continue
        # Log-probs and advantages of untrained targets are ignored by contract: store exact zeros.
        mask = example.target_mask > 0
        example = dataclasses.replace(example, extras={k: np.where(mask, v, 0.0).astype(np.float32)
                                                       for k, v in example.extras.items()})
        if not batch.add(example):
            batches.append(batch.arrays)
            batch = PackedBatch(rows, seq_len, pad_id, RL_EXTRA_KEYS)
            batch.add(example)  # fits: an empty row holds seq_len positions
    if not batch.empty:
        batches.append(batch.arrays)
    return batches
