"""Mixture schedule, packing / bucketing invariants, determinism and resume of the SFT batch iterator."""

import json
from fractions import Fraction

import numpy as np
import pytest

from cmat_jax.data.batching import BatchSpec, SftBatches, default_buckets
from cmat_jax.data.mixture import AGENT, GENERAL, MixtureSchedule
from cmat_jax.data.sft import make_sft_batches
from cmat_jax.data.tokenizer import encode_conversation, load_tokenizer


# -- mixture ------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1 / 3, 0.0, 1.0])
def test_mixture_ratio_holds_on_every_prefix(fraction):
    schedule = MixtureSchedule([7, 11], fraction, seed=0)
    sources = np.array([schedule.locate(k)[0] for k in range(500)])
    agent_so_far = np.cumsum(sources == AGENT)
    expected = np.arange(1, 501) * Fraction(fraction).limit_denominator(1_000_000)
    assert np.all(np.abs(agent_so_far - expected.astype(float)) < 1)


def test_each_source_epoch_is_a_fresh_permutation():
    schedule = MixtureSchedule([5, 8], 0.5, seed=3)
    picks = {AGENT: [], GENERAL: []}
    for k in range(2 * 5 * 3 + 2 * 8 * 3):
        source, index = schedule.locate(k)
        picks[source].append(index)
    for source, n in ((AGENT, 5), (GENERAL, 8)):
        epochs = [picks[source][e * n : (e + 1) * n] for e in range(3)]
        assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
        assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled between epochs


def test_mixture_is_deterministic_from_the_seed():
    def draws(seed):
        schedule = MixtureSchedule([9, 13], 0.3, seed)
        return [schedule.locate(k) for k in range(60)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    # Random access gives what sequential access gives (no hidden state).
    schedule = MixtureSchedule([9, 13], 0.3, 1)
    assert [schedule.locate(k) for k in (50, 3, 40, 3)] == [draws(1)[k] for k in (50, 3, 40, 3)]


def test_mixture_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="no general source"):
        MixtureSchedule([5], 0.5)
    with pytest.raises(ValueError, match=r"expected a value in \[0, 1\]"):
        MixtureSchedule([5, 5], 1.5)
    with pytest.raises(ValueError, match="general source is empty"):
        MixtureSchedule([5, 0], 0.5)


# -- batching over a synthetic stream ----------------------------------------------


def synthetic_stream(seed=0, max_len=40, no_loss_every=0):
    """Position k -> distinct token ids and a random mask; every `no_loss_every`-th example has no loss."""

    def example(k):
        rng = np.random.default_rng([seed, k])
        length = int(rng.integers(1, max_len))
        ids = (1000 * (k + 1) + np.arange(length)).astype(np.int32)
        mask = (rng.random(length) < 0.6).astype(np.int32)
        if no_loss_every and k % no_loss_every == 0:
            mask[:] = 0
        return ids, mask

    return example


def expected_examples(stream, spec, count):
    """The shifted examples the iterator should emit, in order, computed directly."""
    out, k = [], 0
    while len(out) < count:
        ids, mask = stream(k)
        k += 1
        if len(ids) > spec.seq_len + 1:
            if spec.overlong == "drop":
                continue
            ids, mask = ids[: spec.seq_len + 1], mask[: spec.seq_len + 1]
        if len(ids) < 2 or mask[1:].sum() == 0:
            continue
        out.append((ids[:-1], ids[1:], mask[1:]))
    return out


def unpack(batch):
    """Split a batch back into its examples, row by row, segment by segment (checking invariants)."""
    examples = []
    for row in range(batch["tokens"].shape[0]):
        segments = batch["segment_ids"][row]
        real = segments > 0
        # Padding only at the end of a row, and everything is zero there.
        assert not np.any(real[np.argmin(real):]) or real.all()
        for key in ("loss_mask", "positions"):
            assert np.all(batch[key][row][~real] == 0)
        ids = [s for s in np.unique(segments) if s > 0]
        assert ids == list(range(1, len(ids) + 1))
        for s in ids:
            where = np.flatnonzero(segments == s)
            assert np.all(np.diff(where) == 1)  # contiguous
            np.testing.assert_array_equal(batch["positions"][row][where], np.arange(len(where)))
            examples.append(
                (batch["tokens"][row][where], batch["targets"][row][where], batch["loss_mask"][row][where])
            )
    return examples


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_packing_preserves_every_example_in_order(overlong):
    spec = BatchSpec(batch_size=3, seq_len=32, mode="packed", overlong=overlong, pad_id=0)
    stream = synthetic_stream(seed=1, max_len=50, no_loss_every=7)
    batches = SftBatches(stream, spec, examples_per_epoch=100, max_skipped_in_a_row=50)
    emitted = []
    for _ in range(12):
        batch = next(batches)
        assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
            "tokens": ((3, 32), "int32"), "targets": ((3, 32), "int32"), "loss_mask": ((3, 32), "float32"),
            "segment_ids": ((3, 32), "int32"), "positions": ((3, 32), "int32"),
        }
        emitted += unpack(batch)
    # Rows are filled first-fit in stream order, so reading rows in order is not stream order;
    # examples carry distinct ids, so match them by their first token.
    expected = expected_examples(stream, spec, len(emitted))
    by_first_token = {int(e[0][0]): e for e in emitted}
    assert len(by_first_token) == len(emitted)
    for inputs, targets, mask in expected:
        got = by_first_token[int(inputs[0])]
        np.testing.assert_array_equal(got[0], inputs)
        np.testing.assert_array_equal(got[1], targets)
        np.testing.assert_array_equal(got[2], mask.astype(np.float32))
    assert batches.skipped > 0


def test_packing_fills_rows():
    spec = BatchSpec(batch_size=4, seq_len=64, mode="packed")
    batches = SftBatches(synthetic_stream(seed=2, max_len=20), spec, examples_per_epoch=1000, max_skipped_in_a_row=10)
    fill = np.mean([(next(batches)["segment_ids"] > 0).mean() for _ in range(10)])
    assert fill > 0.8  # examples of <= 19 positions leave little room unused in 64-wide rows


def test_bucketed_batches_use_the_smallest_fitting_bucket():
    assert default_buckets(512) == (64, 128, 256, 512)
    assert default_buckets(300) == (64, 128, 256, 300)
    assert default_buckets(32) == (32,)
    spec = BatchSpec(batch_size=2, seq_len=48, mode="bucketed", bucket_lengths=(8, 16, 32, 48))
    stream = synthetic_stream(seed=4, max_len=60)
    batches = SftBatches(stream, spec, examples_per_epoch=100, max_skipped_in_a_row=10)
    emitted, shapes = [], set()
    for _ in range(15):
        batch = next(batches)
        width = batch["tokens"].shape[1]
        longest = int((batch["segment_ids"] > 0).sum(1).max())
        assert width == min(b for b in spec.buckets if b >= longest)
        assert set(np.unique(batch["segment_ids"])) <= {0, 1}
        shapes.add(width)
        emitted += unpack(batch)
    assert len(shapes) > 1
    for got, want in zip(emitted, expected_examples(stream, spec, len(emitted))):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_batch_spec_validation():
    with pytest.raises(ValueError, match="not one of packed, bucketed"):
        BatchSpec(batch_size=1, seq_len=8, mode="sorted")
    with pytest.raises(ValueError, match="ending at seq_len=16"):
        BatchSpec(batch_size=1, seq_len=16, mode="bucketed", bucket_lengths=(4, 8))
    with pytest.raises(ValueError, match="ending at seq_len=16"):
        BatchSpec(batch_size=1, seq_len=16, mode="bucketed", bucket_lengths=())
    with pytest.raises(ValueError, match="overlong"):
        BatchSpec(batch_size=1, seq_len=16, overlong="wrap")


def test_stream_without_loss_tokens_fails_clearly():
    spec = BatchSpec(batch_size=1, seq_len=16)
    batches = SftBatches(synthetic_stream(no_loss_every=1), spec, examples_per_epoch=10, max_skipped_in_a_row=10)
    with pytest.raises(ValueError, match="10 examples in a row had no trained assistant tokens"):
        next(batches)


# -- the full pipeline: determinism and resume ----------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(11)
    with (root / "agent.jsonl").open("w") as f:
        for i in range(6):
            f.write(json.dumps({"conversations": [
                {"from": "human", "value": f"Question {i}? " * int(rng.integers(1, 5))},
                {"from": "gpt", "value": f"SELECT a{i} FROM t;" * int(rng.integers(1, 4))},
            ]}) + "\n")
    with (root / "general.jsonl").open("w") as f:
        for i in range(10):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Hello {i}"},
                {"role": "assistant", "content": "words " * int(rng.integers(1, 12))},
            ]}) + "\n")
    return root / "agent.jsonl", root / "general.jsonl"


def take(batches, n):
    return [next(batches) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("mode", ["packed", "bucketed"])
def test_resume_yields_exactly_the_same_batches(tokenizer, sft_files, mode):
    settings = dict(agent_fraction=0.25, batch_size=2, seq_len=128, mode=mode, seed=5)
    first = make_sft_batches(tokenizer, *sft_files, **settings)
    take(first, 13)  # past the first epoch of these small sets
    saved = json.loads(json.dumps(first.state()))  # the state survives a JSON round trip
    assert saved["epoch"] >= 1
    rest = take(first, 8)

    resumed = make_sft_batches(tokenizer, *sft_files, **settings)
    resumed.restore(saved)
    assert_same_batches(take(resumed, 8), rest)

    again = make_sft_batches(tokenizer, *sft_files, **settings)
    assert_same_batches(take(again, 21)[13:], rest)  # same seed, same order
    other_seed = make_sft_batches(tokenizer, *sft_files, **{**settings, "seed": 6})
    assert any(not np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(take(other_seed, 8), rest))


def test_restore_refuses_a_state_from_other_settings(tokenizer, sft_files):
    batches = make_sft_batches(tokenizer, *sft_files, agent_fraction=0.25, batch_size=2, seq_len=64, seed=5)
    next(batches)
    state = batches.state()
    other = make_sft_batches(tokenizer, *sft_files, agent_fraction=0.5, batch_size=2, seq_len=64, seed=5)
    with pytest.raises(ValueError, match="saved with different data settings"):
        other.restore(state)
    with pytest.raises(ValueError, match="lacks"):
        other.restore({"epoch": 0})


def test_batches_hold_the_tokenized_conversations(tokenizer, sft_files):
    """Every packed example equals encode_conversation of the record the schedule drew."""
    from cmat_jax.data.conversations import JsonlConversations

    sources = [JsonlConversations(p) for p in sft_files]
    schedule = MixtureSchedule([len(s) for s in sources], 0.25, seed=9)
    batches = make_sft_batches(tokenizer, *sft_files, agent_fraction=0.25, batch_size=2, seq_len=64, seed=9)
    emitted = [e for batch in take(batches, 4) for e in unpack(batch)]
    expected = {}
    for k in range(len(emitted)):
        source, index = schedule.locate(k)
        ids, mask = encode_conversation(tokenizer, sources[source][index])
        ids, mask = ids[:65], mask[:65]
        expected.setdefault(ids[:-1].tobytes(), (ids[1:], mask[1:]))
    for inputs, targets, mask in emitted:
        want_targets, want_mask = expected[inputs.tobytes()]
        np.testing.assert_array_equal(targets, want_targets)
        np.testing.assert_array_equal(mask, want_mask.astype(np.float32))
        # Masked targets are assistant text: they decode to SQL or words, never to a user question.
        assert "Question" not in tokenizer.decode(targets[mask == 1])
        assert "Hello" not in tokenizer.decode(targets[mask == 1])
