"""metrics.jsonl checks and the TensorBoard events of a resumed run, read back with a reader of the
TFRecord format written here from its specification (not cmat_jax's own reader)."""

from __future__ import annotations

import os
import struct

import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event

from cmat_jax.training.metrics import MetricsWriter, check_metrics_file, truncate_metrics_after


def _masked_crc(data: bytes) -> int:
    x = crc32c(data) & 0xFFFFFFFF
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path: str) -> list[Event]:
    """Every record of one event file; fails on any framing or checksum error."""
    blob = open(path, "rb").read()
    events, at = [], 0
    while at < len(blob):
        header = blob[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", blob[at + 8:at + 12])[0] == _masked_crc(header), (path, at)
        data = blob[at + 12:at + 12 + length]
        assert len(data) == length, (path, at)
        assert struct.unpack("<I", blob[at + 12 + length:at + 16 + length])[0] == _masked_crc(data), (path, at)
        events.append(Event.FromString(data))
        at += 16 + length
    return events


def _scalars(tb_dir) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the run directory, in the order TensorBoard reads the files."""
    found = []
    for name in sorted(os.listdir(tb_dir)):
        assert "tfevents" in name, name
        for event in _read_events(os.path.join(tb_dir, name)):
            for value in event.summary.value:
                found.append((value.tag, event.step, value.simple_value))
    return found


def _log(workdir, steps, offset, start_step=None):
    writer = MetricsWriter(str(workdir), start_step=start_step)
    for step in steps:
        writer.write(step, {"loss": step + offset})
    writer.close()


def test_a_resumed_run_leaves_each_step_once_in_tensorboard_and_jsonl(tmp_path):
    _log(tmp_path, [1, 2, 3, 4, 5], offset=0.0)  # killed after step 5, last checkpoint at step 3
    truncate_metrics_after(str(tmp_path / "metrics.jsonl"), 3)
    assert _scalars(tmp_path / "tensorboard") == [("train/loss", s, float(s)) for s in (1, 2, 3)]
    _log(tmp_path, [4, 5, 6], offset=0.5, start_step=3)  # opened in the same second as the first writer

    scalars = _scalars(tmp_path / "tensorboard")
    assert sorted((step, value) for _, step, value in scalars) == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5), (5, 5.5), (6, 6.5)]
    assert len(os.listdir(tmp_path / "tensorboard")) == 2  # the second writer did not overwrite the first
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [f'{{"step": {s}' for s in (1, 2, 3, 4, 5, 6)]

    # The new file also tells a TensorBoard that already read steps 4 and 5 to forget them.
    newest = sorted(os.listdir(tmp_path / "tensorboard"))
    restarts = [e.step for name in newest for e in _read_events(str(tmp_path / "tensorboard" / name))
                if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert restarts == [4]


def test_a_torn_last_event_record_is_dropped_and_the_file_stays_readable(tmp_path):
    _log(tmp_path, [1, 2, 3], offset=0.0)
    (event_file,) = os.listdir(tmp_path / "tensorboard")
    path = tmp_path / "tensorboard" / event_file
    path.write_bytes(path.read_bytes()[:-7])  # killed in the middle of step 3's record
    with pytest.raises(AssertionError):
        _read_events(str(path))
    truncate_metrics_after(str(tmp_path / "metrics.jsonl"), 2)
    assert _scalars(tmp_path / "tensorboard") == [("train/loss", 1, 1.0), ("train/loss", 2, 2.0)]


def test_check_metrics_file_names_the_bad_line_and_changes_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert check_metrics_file(str(path)) == []
    corrupt = '{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n'
    path.write_text(corrupt)
    with pytest.raises(ValueError) as info:
        check_metrics_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path} line 2 is not JSON (not valid JSON: Invalid control character at column 16)")
    assert "fix or delete that line" in message and "\n" not in message
    assert path.read_text() == corrupt

    path.write_text('{"step": 1}\n["step", 2]\n')
    with pytest.raises(ValueError, match=r"line 2 is not a metrics record \(expected an object with an integer"):
        check_metrics_file(str(path))
    path.write_text('{"step": 1}\n{"step": "2"}\n')
    with pytest.raises(ValueError, match="line 2 is not a metrics record"):
        check_metrics_file(str(path))

    path.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "lo')  # killed mid-write: not an error
    assert [(line.number, line.value) for line in check_metrics_file(str(path))] == [(1, {"step": 1, "loss": 2.0})]


def test_truncation_keeps_records_verbatim_and_removes_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.1000000000000000055511151231257827}\n{"step": 2}\n{"st')
    truncate_metrics_after(str(path), 1)
    assert path.read_text() == '{"step": 1, "loss": 0.1000000000000000055511151231257827}\n'
    path.write_text('{"st')
    truncate_metrics_after(str(path), 1)
    assert path.read_text() == ""


def test_records_keep_text_and_integers_and_tensorboard_gets_the_numbers_under_their_group(tmp_path):
    import numpy as np

    writer = MetricsWriter(str(tmp_path))
    writer.write(1, {"phase": "sft", "iteration": 0, "loss": np.float32(0.5), "grad_norm": float("nan")}, group="sft")
    writer.write(2, {"phase": "eval", "success_rate": 0.25, "improved": True, "note": None}, group="eval")
    with pytest.raises(TypeError, match="metric 'loss' is \\[1.0\\]; expected a number"):
        writer.write(3, {"loss": [1.0]})
    writer.close()
    assert [line.value for line in check_metrics_file(str(tmp_path / "metrics.jsonl"))] == [
        {"step": 1, "phase": "sft", "iteration": 0, "loss": 0.5, "grad_norm": None},
        {"step": 2, "phase": "eval", "success_rate": 0.25, "improved": True, "note": None}]
    scalars = _scalars(tmp_path / "tensorboard")
    assert scalars[:2] == [("sft/iteration", 1, 0.0), ("sft/loss", 1, 0.5)]
    assert scalars[2][:2] == ("sft/grad_norm", 1) and np.isnan(scalars[2][2])
    assert scalars[3:] == [("eval/success_rate", 2, 0.25)]
