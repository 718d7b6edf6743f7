"""A process's SFT rows are exactly those rows of the global batch, and the state stays global."""

import numpy as np
import pytest

from cmat_jax.data.batching import BatchSpec, PackedBatch, SftBatches, TrainingExample
from tests.data.test_sft_batching import synthetic_stream


@pytest.mark.parametrize("mode", ["packed", "bucketed"])
@pytest.mark.parametrize("rows", [(0, 1), (2, 3), (1, 2), (0, 1, 2, 3), (0, 2), (1, 3)])
def test_a_process_rows_are_those_rows_of_the_whole_batch(mode, rows):
    spec = BatchSpec(batch_size=4, seq_len=32, mode=mode, pad_id=0)
    stream = synthetic_stream(seed=2, max_len=30, no_loss_every=5)
    whole = SftBatches(stream, spec, examples_per_epoch=97, max_skipped_in_a_row=50)
    block = SftBatches(stream, spec, examples_per_epoch=97, max_skipped_in_a_row=50, rows=rows)
    for _ in range(8):
        expected, got = next(whole), next(block)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key][list(rows)])
        assert block.state() == whole.state()  # the global stream position, whatever the rows

    # Restored onto other rows (another process count), it continues with those rows of the same batches.
    other = SftBatches(stream, spec, examples_per_epoch=97, max_skipped_in_a_row=50, rows=(3,))
    other.restore(block.state())
    np.testing.assert_array_equal(next(other)["tokens"], next(whole)["tokens"][3:4])


def test_packed_batch_counts_rows_it_does_not_hold():
    example = TrainingExample(np.arange(5, dtype=np.int32), np.arange(1, 6, dtype=np.int32), np.ones(5, np.float32))
    batch = PackedBatch(rows=2, seq_len=8, owned=(1,))
    assert batch.add(example)  # row 0, not held
    assert batch.arrays["tokens"].shape == (1, 8) and not batch.arrays["segment_ids"].any()
    assert batch.add(example)  # row 1 (row 0 is full), held
    np.testing.assert_array_equal(batch.arrays["segment_ids"][0], [1, 1, 1, 1, 1, 0, 0, 0])
    assert not batch.add(example)


@pytest.mark.parametrize("rows", [(), (2, 2), (-1, 2), (0, 4), (3, 1)])
def test_bad_rows_are_refused(rows):
    spec = BatchSpec(batch_size=4, seq_len=32)
    with pytest.raises(ValueError, match="are not increasing indices of the batch's 4 rows"):
        SftBatches(synthetic_stream(), spec, examples_per_epoch=10, max_skipped_in_a_row=5, rows=rows)
