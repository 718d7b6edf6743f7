"""SFT data in one call: sources (JSONL or TFDS) -> mixture -> tokens with loss masks -> batches.

    tokenizer = load_tokenizer(path)
    batches = make_sft_batches(tokenizer, "agent.jsonl", "general.jsonl", agent_fraction=0.2,
                               batch_size=8, seq_len=2048, mode="packed", seed=0)
    batch = next(batches)                  # dict of numpy arrays, see batching.py
    saved = batches.state()                # {"epoch", "index", "fingerprint"}
    batches.restore(saved)                 # continues with exactly the same batches
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cmat_jax.data.batching import BatchSpec, SftBatches
from cmat_jax.data.conversations import ConversationSource, DataError
from cmat_jax.data.mixture import MixtureSchedule
from cmat_jax.data.sources import open_conversations
from cmat_jax.data.tokenizer import encode_conversation


class TokenizedMixture:
    """Stream position -> (ids, loss_mask) of the conversation the schedule draws there."""

    def __init__(self, sources: list[ConversationSource], schedule: MixtureSchedule, tokenizer):
        self.sources = sources
        self.schedule = schedule
        self.tokenizer = tokenizer

    def __call__(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        source, index = self.schedule.locate(position)
        conversation = self.sources[source][index]
        try:
            return encode_conversation(self.tokenizer, conversation)
        except (ValueError, TypeError) as error:
            raise DataError(f"{self.sources[source].describe(index)}: {error}") from error


def make_sft_batches(
    tokenizer,
    agent_source: str | Path,
    general_source: str | Path | None = None,
    *,
    agent_fraction: float = 1.0,
    batch_size: int,
    seq_len: int,
    mode: str = "packed",
    seed: int = 0,
    overlong: str = "truncate",
    bucket_lengths: tuple[int, ...] | None = None,
    split: str = "train",
    rows: Sequence[int] | None = None,
) -> SftBatches:
    """An infinite, resumable iterator of SFT batches.

    agent_source / general_source: JSONL files or TFDS directories (tools/build_tfds.py).
    agent_fraction: share of examples drawn from the agent source (1.0 without a general source).
    rows: the (increasing) indices of each batch's rows to yield (one process's share); default all.
    """
    sources = [open_conversations(agent_source, split)]
    if general_source is not None:
        sources.append(open_conversations(general_source, split))
    schedule = MixtureSchedule([len(s) for s in sources], agent_fraction, seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    spec = BatchSpec(
        batch_size=batch_size,
        seq_len=seq_len,
        mode=mode,
        overlong=overlong,
        bucket_lengths=tuple(bucket_lengths) if bucket_lengths is not None else None,
        pad_id=int(pad_id) if pad_id is not None else 0,
    )
    return SftBatches(
        TokenizedMixture(sources, schedule, tokenizer),
        spec,
        examples_per_epoch=schedule.examples_per_epoch,
        max_skipped_in_a_row=schedule.draws_to_cover_all,
        fingerprint=schedule.describe(),
        rows=rows,
    )
