"""Training metrics: one JSON object per logged step in <workdir>/metrics.jsonl,
and the same scalars as TensorBoard event files in <workdir>/tensorboard/.

A resumed run re-runs the steps logged after its last checkpoint, so
`truncate_metrics_after` drops those steps from both places and each step
appears once. `check_metrics_file` reads metrics.jsonl without changing it and
names the first bad line: call it before anything expensive is built
(training/run_state.py's resume_step does). A failed write (a full disk) names
metrics.jsonl.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import numbers
from typing import Any, Mapping, Optional

from cmat_jax.fileio import JsonlError, JsonlLine, atomic_write, read_jsonl
from cmat_jax.training.tb_events import drop_events_after

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

# Event file names carry the second they were opened; this suffix keeps two writers opened
# in the same second (a quick resume) from overwriting each other's file.
_WRITER_NUMBERS = itertools.count()


def check_metrics_file(path: str) -> list[JsonlLine]:
    """The lines of a metrics.jsonl (none if it does not exist); each `.value` is a record, an object with
    an integer "step".

    A partial last line (a run killed mid-write) is skipped; any other bad line raises
    ValueError naming the file and line.
    """
    if not os.path.isfile(path):
        return []
    try:
        lines = list(read_jsonl(path, partial_last_line=True))
    except JsonlError as e:
        raise ValueError(f"{e.path} line {e.line_number} is not JSON ({e.problem}: {e.detail}); fix or delete "
                         f"that line to resume") from None
    for line in lines:
        step = line.value.get("step") if isinstance(line.value, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{path} line {line.number} is not a metrics record (expected an object with an "
                             f"integer 'step', found {line.text.strip()[:80]!r}); fix or delete that line to resume")
    return lines


def truncate_metrics_after(path: str, step: int) -> None:
    """Drops records past `step` from metrics.jsonl at `path` and from the TensorBoard events beside it
    (<dir of path>/tensorboard/): a resumed run rewrites the steps its killed predecessor logged after
    its last checkpoint, and each step must appear once."""
    lines = check_metrics_file(path)
    if os.path.isfile(path):  # rewritten even when nothing is dropped: a partial last line must go
        kept = [line.text if line.text.endswith("\n") else line.text + "\n"
                for line in lines if line.value["step"] <= step]
        with atomic_write(path) as f:
            f.writelines(kept)
    drop_events_after(os.path.join(os.path.dirname(path), TENSORBOARD_DIR), step)


class MetricsWriter:
    """Appends metrics; `enabled=False` (non-zero hosts) writes nothing.

    `start_step`, the step a resumed run restarts from, also marks the new event file so that a
    TensorBoard already showing the old points drops those past it (its purge-on-restart rule).
    """

    def __init__(self, workdir: str, *, enabled: bool = True, start_step: Optional[int] = None):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._file = None
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                     purge_step=None if start_step is None else start_step + 1,
                                     filename_suffix=f".{os.getpid()}.{next(_WRITER_NUMBERS)}")

    def write(self, step: int, metrics: Mapping[str, Any], *, group: str = "train") -> None:
        """Appends one record. Python ints, text, booleans and None are written as they are, other numbers
        as floats (non-finite ones as null: JSON has no NaN). TensorBoard gets each number (not text or
        booleans) as `<group>/<name>` at `step`."""
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _json_value(k, v) for k, v in metrics.items()})
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()  # a killed run keeps every step it logged
        except OSError as e:  # a write names no file; a full disk should say which
            raise OSError(e.errno, e.strerror, self.path) from e
        for name, value in metrics.items():
            if _is_number(value):
                self._tb.add_scalar(f"{group}/{name}", float(value), int(step))

    def close(self) -> None:
        if self._file is not None:
            file, tb = self._file, self._tb
            self._file = self._tb = None
            try:
                file.close()
            except OSError as e:  # the flush of what a failed write left buffered
                raise OSError(e.errno, e.strerror, self.path) from e
            finally:
                try:
                    tb.close()
                except OSError as e:
                    raise OSError(e.errno, e.strerror, tb.logdir) from e


def _is_number(value: Any) -> bool:
    """A real number: Python's, numpy's, or a 0-d array; booleans are not counted as numbers."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    return getattr(value, "shape", None) == () and getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u", "f")


def _json_value(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if not _is_number(value):
        raise TypeError(f"metric {name!r} is {value!r}; expected a number, text, a boolean or None")
    value = float(value)
    return value if math.isfinite(value) else None
