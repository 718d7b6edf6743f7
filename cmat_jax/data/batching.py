"""Token examples -> fixed-shape training batches (packed rows or length buckets), resumable.

An example of L tokens gives L-1 training positions: inputs ids[:-1], targets
ids[1:], and the loss mask of the targets (1 where the target token is
assistant-generated). `seq_len` counts these positions, so an example takes up
to seq_len + 1 tokens. Longer examples are cut to their first seq_len + 1
tokens (overlong="truncate") or skipped (overlong="drop"). Examples with no
loss-bearing target (no trained assistant turn left) are skipped: they would
cost compute and teach nothing.

Batches are dicts of numpy arrays, all [batch, length]:
  tokens      int32   model inputs (pad_id at padding)
  targets     int32   next token of each input (pad_id at padding)
  loss_mask   float32 1.0 where the target is assistant-generated, else 0.0
  segment_ids int32   0 at padding, 1..n for the examples packed in a row
  positions   int32   position within its own example, restarting at 0
Examples may carry further per-target arrays (`TrainingExample.extras`, e.g.
the sampler's log-probs and the advantages of RL rows); each becomes one more
float32 batch array under its own name, 0.0 at padding.

packed:   rows of exactly seq_len; examples are placed in stream order, each
          into the first row with room; the first example that fits no row
          starts the next batch. Attention must not cross segment_ids.
bucketed: one example per row, padded to the smallest bucket length that holds
          the longest example of the batch, so only len(buckets) shapes compile.

The iterator is infinite. Its state is the stream position of the next
example, written as {"epoch", "index"} (plus a fingerprint of the settings);
`restore(state)` makes it yield exactly the batches that followed that state.

Rows of one process. In a run of several processes each builds only the rows of
the global batch that its devices hold, `rows` (increasing row indices, usually
one block). Every process walks the same
global stream and makes the same packing decisions (they need the token count
of every example of the batch), and fills only its own rows; the state stays the
global stream position, so a run resumes on any number of processes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

MODES = ("packed", "bucketed")
OVERLONG = ("truncate", "drop")

# stream position -> (ids int32[L], loss_mask int32[L]) of the conversation drawn there
ExampleFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def default_buckets(seq_len: int, smallest: int = 64) -> tuple[int, ...]:
    """Powers of two from `smallest` below seq_len, then seq_len itself."""
    buckets = []
    length = smallest
    while length < seq_len:
        buckets.append(length)
        length *= 2
    buckets.append(seq_len)
    return tuple(buckets)


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    batch_size: int
    seq_len: int
    mode: str = "packed"
    overlong: str = "truncate"
    bucket_lengths: tuple[int, ...] | None = None  # bucketed mode; None: default_buckets(seq_len)
    pad_id: int = 0

    def __post_init__(self):
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, found {self.batch_size} and {self.seq_len}")
        if self.mode not in MODES:
            raise ValueError(f"batching mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.overlong not in OVERLONG:
            raise ValueError(f"overlong={self.overlong!r} is not one of {', '.join(OVERLONG)}")
        if self.bucket_lengths is not None:
            buckets = tuple(self.bucket_lengths)
            if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1 or buckets[-1] != self.seq_len:
                raise ValueError(
                    f"bucket_lengths {list(buckets)} must be increasing positive lengths ending at "
                    f"seq_len={self.seq_len}"
                )

    @property
    def buckets(self) -> tuple[int, ...]:
        return tuple(self.bucket_lengths) if self.bucket_lengths is not None else default_buckets(self.seq_len)


@dataclasses.dataclass(frozen=True)
class TrainingExample:
    """One example shifted for next-token training: every array has the same length.

    `extras` maps batch names to further float32 per-target arrays (none for SFT).
    """

    inputs: np.ndarray
    targets: np.ndarray
    target_mask: np.ndarray
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


def to_training_example(ids: np.ndarray, loss_mask: np.ndarray, spec: BatchSpec,
                        extras: dict[str, np.ndarray] | None = None) -> TrainingExample | None:
    """Shift and cut one tokenized conversation; None when it should be skipped.

    `extras` maps names to per-token arrays aligned with `ids`; like the loss
    mask, each keeps the values of the targets (positions 1..L-1).
    """
    extras = extras or {}
    if len(ids) > spec.seq_len + 1:
        if spec.overlong == "drop":
            return None
        ids, loss_mask = ids[: spec.seq_len + 1], loss_mask[: spec.seq_len + 1]
        extras = {k: v[: spec.seq_len + 1] for k, v in extras.items()}
    if len(ids) < 2 or not loss_mask[1:].any():
        return None
    return TrainingExample(
        inputs=np.asarray(ids[:-1], np.int32),
        targets=np.asarray(ids[1:], np.int32),
        target_mask=np.asarray(loss_mask[1:], np.float32),
        extras={k: np.asarray(v[1:], np.float32) for k, v in extras.items()},
    )


def _empty_batch(rows: int, length: int, pad_id: int, extra_keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    batch = {
        "tokens": np.full((rows, length), pad_id, np.int32),
        "targets": np.full((rows, length), pad_id, np.int32),
        "loss_mask": np.zeros((rows, length), np.float32),
        "segment_ids": np.zeros((rows, length), np.int32),
        "positions": np.zeros((rows, length), np.int32),
    }
    for key in extra_keys:
        batch[key] = np.zeros((rows, length), np.float32)
    return batch


def _place(batch: dict[str, np.ndarray], row: int, start: int, segment: int, example: TrainingExample) -> None:
    end = start + len(example)
    batch["tokens"][row, start:end] = example.inputs
    batch["targets"][row, start:end] = example.targets
    batch["loss_mask"][row, start:end] = example.target_mask
    batch["segment_ids"][row, start:end] = segment
    batch["positions"][row, start:end] = np.arange(len(example), dtype=np.int32)
    for key, values in example.extras.items():
        batch[key][row, start:end] = values


class PackedBatch:
    """One packed batch being filled: each example goes into the first row with room.

    `add` returns False (and places nothing) when the example fits no row; the
    caller then starts the next batch with it. Shared by the SFT iterator and
    the RL rows (cmat_jax/rl/rows.py), so both pack the same way.
    """

    def __init__(self, rows: int, seq_len: int, pad_id: int = 0, extra_keys: tuple[str, ...] = (),
                 owned: Sequence[int] | None = None):
        """`owned`: the rows held in `arrays`, in this order (default all); the others are only counted."""
        self.seq_len = seq_len
        self.extra_keys = tuple(extra_keys)
        self.owned = check_rows(owned, rows)
        self._slot = {row: slot for slot, row in enumerate(self.owned)}
        self.arrays = _empty_batch(len(self.owned), seq_len, pad_id, self.extra_keys)
        self._used = [0] * rows
        self._segments = [0] * rows

    @property
    def empty(self) -> bool:
        return not any(self._used)

    def add(self, example: TrainingExample) -> bool:
        if set(example.extras) != set(self.extra_keys):
            raise ValueError(f"the example carries per-target arrays {sorted(example.extras)}; this batch holds "
                             f"{sorted(self.extra_keys)}")
        row = next((r for r in range(len(self._used)) if self._used[r] + len(example) <= self.seq_len), None)
        if row is None:
            return False
        self._segments[row] += 1
        if row in self._slot:
            _place(self.arrays, self._slot[row], self._used[row], self._segments[row], example)
        self._used[row] += len(example)
        return True


def check_rows(rows: Sequence[int] | None, batch_size: int) -> tuple[int, ...]:
    """Increasing indices of some of a batch's rows (at least one); None means all of them."""
    if rows is None:
        return tuple(range(batch_size))
    rows = tuple(int(r) for r in rows)
    if not rows or any(b <= a for a, b in zip(rows, rows[1:])) or rows[0] < 0 or rows[-1] >= batch_size:
        raise ValueError(f"rows {list(rows)} are not increasing indices of the batch's {batch_size} rows "
                         "(at least one)")
    return rows


class SftBatches:
    """Infinite, deterministic, resumable iterator of training batches over an example stream."""

    def __init__(
        self,
        examples: ExampleFn,
        spec: BatchSpec,
        examples_per_epoch: int,
        max_skipped_in_a_row: int,
        fingerprint: str = "",
        rows: Sequence[int] | None = None,
    ):
        """`rows`: the (increasing) indices of each batch's rows this iterator yields (default all)."""
        if examples_per_epoch < 1:
            raise ValueError(f"examples_per_epoch must be >= 1, found {examples_per_epoch}")
        self._examples = examples
        self.spec = spec
        self.rows = check_rows(rows, spec.batch_size)
        self.examples_per_epoch = examples_per_epoch
        self._max_skipped = max(1, max_skipped_in_a_row)
        self.fingerprint = f"{fingerprint} batch_size={spec.batch_size} seq_len={spec.seq_len} mode={spec.mode} overlong={spec.overlong}"
        if spec.mode == "bucketed":
            self.fingerprint += f" buckets={list(spec.buckets)}"
        self._position = 0
        self._lookahead: tuple[int, TrainingExample, int] | None = None
        self.skipped = 0  # examples skipped so far in this process (too long with "drop", or no loss)

    # -- state -----------------------------------------------------------
    def state(self) -> dict:
        epoch, index = divmod(self._position, self.examples_per_epoch)
        return {"epoch": epoch, "index": index, "fingerprint": self.fingerprint}

    def restore(self, state: dict) -> None:
        missing = {"epoch", "index"} - set(state)
        if missing:
            raise ValueError(f"data iterator state {state} lacks {sorted(missing)}; expected epoch and index")
        if "fingerprint" in state and state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"data iterator state was saved with different data settings:\n  saved: {state['fingerprint']}\n"
                f"  now:   {self.fingerprint}\nresume with the same data files, mixture, seed and batching"
            )
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < self.examples_per_epoch:
            raise ValueError(f"data iterator state epoch={epoch} index={index} is out of range")
        self._position = epoch * self.examples_per_epoch + index
        self._lookahead = None

    # -- iteration -------------------------------------------------------
    def __iter__(self) -> "SftBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.spec.mode == "packed":
            return self._next_packed()
        return self._next_bucketed()

    def _peek(self) -> tuple[int, TrainingExample, int]:
        """(position of the next usable example, the example, the position after it)."""
        if self._lookahead is not None:  # computed from the current position
            return self._lookahead
        position, skipped = self._position, 0
        while True:
            ids, loss_mask = self._examples(position)
            example = to_training_example(ids, loss_mask, self.spec)
            if example is not None:
                self._lookahead = (position, example, position + 1)
                return self._lookahead
            skipped += 1
            self.skipped += 1
            position += 1
            if skipped >= self._max_skipped:
                raise ValueError(
                    f"{skipped} examples in a row had no trained assistant tokens"
                    f"{' or were longer than seq_len+1 tokens' if self.spec.overlong == 'drop' else ''}; "
                    f"check the data (assistant turns, loss flags) and seq_len={self.spec.seq_len}"
                )

    def _take(self) -> TrainingExample:
        _, example, after = self._peek()
        self._position = after
        self._lookahead = None
        return example

    def _next_packed(self) -> dict[str, np.ndarray]:
        spec = self.spec
        batch = PackedBatch(spec.batch_size, spec.seq_len, spec.pad_id, owned=self.rows)
        while True:
            _, example, _ = self._peek()
            if not batch.add(example):
                return batch.arrays
            self._take()

    def _next_bucketed(self) -> dict[str, np.ndarray]:
        spec = self.spec
        examples = [self._take() for _ in range(spec.batch_size)]
        longest = max(len(e) for e in examples)
        length = next(b for b in spec.buckets if b >= longest)
        batch = _empty_batch(len(self.rows), length, spec.pad_id)
        for slot, row in enumerate(self.rows):
            _place(batch, slot, 0, 1, examples[row])
        return batch
