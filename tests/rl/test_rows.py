"""Segments -> packed RL batches: the SFT packer's layout plus aligned log-probs and advantages."""

from __future__ import annotations

import numpy as np
import pytest

from cmat_jax.data.batching import BatchSpec, SftBatches
from cmat_jax.rl.rows import RL_BATCH_KEYS, Segment, pack_segments
from cmat_jax.training.step import BATCH_KEYS


def _segment(rng, length, prompt):
    ids = rng.integers(1, 1000, length)
    mask = np.zeros(length, np.int32)
    mask[prompt:] = 1
    mask[prompt + 2: prompt + 4] = 0  # an observation inside the record
    logprobs = np.where(mask > 0, -rng.random(length) * 3, np.nan)  # garbage where untrained
    advantages = np.where(mask > 0, rng.normal(), np.inf)
    return Segment(ids=ids, loss_mask=mask, logprobs=logprobs, advantages=advantages)


def test_packing_is_the_sft_packing_with_aligned_extras():
    rng = np.random.default_rng(0)
    segments = [_segment(rng, int(n), int(p)) for n, p in zip(rng.integers(8, 30, 25), rng.integers(2, 6, 25))]
    batches = pack_segments(segments, rows=4, seq_len=40)
    assert all(set(b) == set(RL_BATCH_KEYS) and all(v.shape == (4, 40) for v in b.values()) for b in batches)

    # The SFT iterator over the same (ids, mask) stream gives the same SFT arrays, byte for byte.
    sft = SftBatches(lambda i: (segments[i % len(segments)].ids, segments[i % len(segments)].loss_mask),
                     BatchSpec(batch_size=4, seq_len=40), examples_per_epoch=len(segments), max_skipped_in_a_row=1)
    for i, batch in enumerate(batches):
        expected = next(sft)
        if i == len(batches) - 1:  # the endless SFT stream goes on filling the last batch: compare what is placed
            placed_here = batch["segment_ids"] > 0
            expected = {k: np.where(placed_here, v, batch[k]) for k, v in expected.items()}
        for key in BATCH_KEYS:
            assert batch[key].dtype == expected[key].dtype and batch[key].tobytes() == expected[key].tobytes(), key

    # Every target's log-prob and advantage is its segment's value at that token; 0 where untrained.
    by_ids = {tuple(s.ids.tolist()): s for s in segments}
    placed = []
    for batch in batches:
        for row in range(4):
            for seg_id in sorted(set(batch["segment_ids"][row].tolist()) - {0}):
                where = batch["segment_ids"][row] == seg_id
                ids = batch["tokens"][row, where].tolist() + [int(batch["targets"][row, where][-1])]
                segment = by_ids[tuple(ids)]
                placed.append(segment)
                np.testing.assert_array_equal(batch["targets"][row, where], segment.ids[1:])
                trained = segment.loss_mask[1:] > 0
                np.testing.assert_array_equal(batch["loss_mask"][row, where], trained)
                np.testing.assert_array_equal(batch["old_logprobs"][row, where],
                                              np.where(trained, segment.logprobs[1:], 0.0))
                np.testing.assert_array_equal(batch["advantages"][row, where],
                                              np.where(trained, segment.advantages[1:], 0.0))
        assert np.isfinite(batch["old_logprobs"]).all() and np.isfinite(batch["advantages"]).all()
        assert not batch["old_logprobs"][batch["loss_mask"] == 0].any()
    assert len(placed) == len({id(s) for s in placed}) == len(segments)  # each segment exactly once


def test_overlong_segment_is_an_error_naming_the_lengths():
    seg = Segment(ids=np.arange(1, 12), loss_mask=[0] * 5 + [1] * 6, logprobs=[-0.5] * 11, advantages=[1.0] * 11)
    assert len(pack_segments([seg], rows=1, seq_len=10)) == 1  # 11 tokens = seq_len + 1 fit
    short = Segment(ids=[1, 2, 3], loss_mask=[0, 1, 1], logprobs=[0, -1, -1], advantages=[0, 1, 1])
    with pytest.raises(ValueError, match="segment 1 has 11 tokens, more than seq_len \\+ 1 = 10"):
        pack_segments([short, seg], rows=2, seq_len=9)


def test_segments_without_trained_targets_are_left_out():
    untrained = Segment(ids=[1, 2, 3], loss_mask=[0, 0, 0], logprobs=[0, 0, 0], advantages=[0, 0, 0])
    assert pack_segments([untrained], rows=2, seq_len=8) == []
    assert pack_segments([], rows=2, seq_len=8) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(ids=[1, 2, 3], loss_mask=[0, 1], logprobs=[0, 0, 0], advantages=[0, 0, 0]), "one length"),
    (dict(ids=[1, 2, 3], loss_mask=[0, 1, 1], logprobs=[0, -1, 0.5], advantages=[0, 0, 0]), r"logprobs\[2\]"),
    (dict(ids=[1, 2, 3], loss_mask=[1, 1, 1], logprobs=[-1, -1, -1], advantages=[0, 0, 0]), "first token"),
    (dict(ids=[1, 2, 3], loss_mask=[0, 2, 1], logprobs=[0, -1, -1], advantages=[0, 0, 0]), "only 0 and 1"),
    (dict(ids=[1, 2, 3], loss_mask=[0, 1, 1], logprobs=[0, -1, -1], advantages=[0, np.nan, 0]), "non-finite"),
    (dict(ids=[[1, 2, 3]], loss_mask=[0, 1, 1], logprobs=[0, -1, -1], advantages=[0, 1, 0]), "one-dimensional"),
])
def test_malformed_segments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Segment(**kwargs)
