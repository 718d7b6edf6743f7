"""Training metrics: one JSON object per logged step in <workdir>/metrics.jsonl,
and the same scalars as TensorBoard event files in <workdir>/tensorboard/."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

from absl import logging


def truncate_metrics_after(path: str, step: int) -> None:
    """Drops records past `step`: a resumed run rewrites the steps its killed predecessor logged
    after its last checkpoint, and each step must appear once."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the killed run stopped mid-write: drop the partial record
                logging.warning("dropping the partial last line of %s", path)
                continue
            raise ValueError(f"{path} line {number} is not JSON ({line[:80]!r}); fix or delete that line "
                             "to resume") from None
        if record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricsWriter:
    """Appends metrics; `enabled=False` (non-zero hosts) writes nothing."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = None
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        # Non-finite values are written as null: JSON has no NaN.
        record = {"step": int(step)}
        record.update({k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a killed run keeps every step it logged
        for name, value in metrics.items():
            self._tb.add_scalar(f"train/{name}", float(value), int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tb.close()
            self._file = self._tb = None
