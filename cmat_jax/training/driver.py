"""The lifecycle every training loop shares: the SFT trainer (training/trainer.py) and the CMAT loop
(rl/loop.py) are `Driver`s.

    start        Driver(settings): the checkpointer, and the checkpoint to resume from with resume_step's checks
                 of the saved config.json (a workdir with checkpoints needs `resume`), then the device mesh,
                 all before anything expensive is built
    state        build_state(tokenizer, roles=...): the RunState (frozen base, an adapter per role, optimizer
                 states), and the tokenizer checked against the model's vocabulary
    resume       resume(): the checkpoint's adapters and optimizer states, and the loop's host items through
                 its restore_host(host); then the run record (config.json; metrics past the step dropped)
    each update  read_metrics(device_metrics, where=...): the step's metrics as floats, with the non-finite
                 guard (train.nonfinite 'stop' raises NonFiniteError, 'skip' counts it in skipped_steps)
    records      with records(total, desc) as (writer, bar): metrics.jsonl, TensorBoard and the progress bar
                 (process 0 only); leaving waits for pending checkpoint saves
    checkpoints  save(host, force=...) at self.step
    close        close()

A step whose update is skipped is not applied (training/step.py), so the saved weights stay finite.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import jax
from absl import logging

from cmat_jax.settings.run import RunSettings
from cmat_jax.training import build
from cmat_jax.training.metrics import MetricsWriter
from cmat_jax.training.run_state import (RESUMABLE_CHANGES, RunState, make_checkpointer, record_run, restore_intact,
                                         resume_step)


class NonFiniteError(FloatingPointError):
    """A step produced a non-finite loss or gradient and train.nonfinite is 'stop'."""


def check_vocabulary(tokenizer, vocab_size: int) -> None:
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary has {vocab_size}; use "
                         "the tokenizer that belongs to the model")


class Driver:
    """Start, resume, non-finite guard, records, checkpoints and close of one run (see the module docstring).

    `resumable` and `extra_checks` are resume_step's: what a resumed run may change; `end_step` (named by
    `end_field`) is the step the run ends at, so that a resume asking for less than is done is refused. `mesh`
    overrides the settings' mesh (e.g. a sub-mesh of some devices).
    """

    def __init__(self, settings: RunSettings, *, mesh=None, resumable: Sequence[str] = RESUMABLE_CHANGES,
                 extra_checks: Optional[Callable[[dict, dict], list[str]]] = None, end_step: Optional[int] = None,
                 end_field: str = "train.steps"):
        self.settings = settings
        self.workdir = settings.workdir
        self.is_main = jax.process_index() == 0
        self.checkpointer = make_checkpointer(settings.source, self.workdir)
        checks = {} if extra_checks is None else {"extra_checks": extra_checks}
        self.resume_at = resume_step(settings.source, self.checkpointer, self.workdir, resumable=resumable,
                                     end_step=end_step, end_field=end_field, **checks)
        self.mesh = mesh if mesh is not None else build.make_mesh(settings.mesh)
        self.state: Optional[RunState] = None
        self.step = 0  # the checkpoint step
        self.skipped_steps = 0  # updates not applied for a non-finite loss or gradient

    def build_state(self, tokenizer, **roles) -> RunState:
        """The run state (`roles`: RunState's roles and frozen_roles); `tokenizer` None skips the vocabulary
        check (batches given from outside)."""
        self.state = RunState(self.settings, mesh=self.mesh, checkpointer=self.checkpointer, **roles)
        if tokenizer is not None:
            check_vocabulary(tokenizer, self.state.model_config.vocab_size)
        return self.state

    def restore_host(self, host: dict) -> None:
        """Restores the loop's own host items of a checkpoint (data position, curriculum, ...)."""
        raise NotImplementedError

    def resume(self) -> None:
        """Continues from the checkpoint found at start (if any), or from the newest earlier one that reads back
        whole (restore_intact sets the unreadable ones aside), then records the run."""
        if self.resume_at is not None:
            self.resume_at = restore_intact(self.checkpointer, self._restore, self.resume_at)
            logging.info("resumed %s at step %d", self.workdir, self.step)
        record_run(self.settings.source, self.workdir, self.step)

    def _restore(self, step: int) -> None:
        host = self.state.restore(step)
        self.step = step
        self.restore_host(host)

    def read_metrics(self, device_metrics, *, where: str, learning_rate_field: str = "train.learning_rate"
                     ) -> tuple[dict, bool]:
        """(the metrics as floats without 'finite', whether the update was finite); `where` names the update
        in the error or warning."""
        m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        finite = bool(m.pop("finite"))
        if not finite:
            if self.settings.train.nonfinite == "stop":
                raise NonFiniteError(
                    f"{where}: loss {m['loss']} / gradient norm {m['grad_norm']} is not finite; the update was not "
                    f"applied and the run stopped. The last checkpoint ({self.checkpointer.latest_step()}) holds "
                    f"finite weights. Lower {learning_rate_field}, check the data around this step, or set "
                    "train.nonfinite='skip'")
            self.skipped_steps += 1
            logging.warning("%s: non-finite loss or gradient; update skipped (%d skipped so far)", where,
                            self.skipped_steps)
        return m, finite

    @contextlib.contextmanager
    def records(self, total: int, desc: str):
        """(MetricsWriter, progress bar over `total` steps from self.step); both closed, and pending
        checkpoint saves waited for, on leaving."""
        from tqdm import tqdm

        writer = MetricsWriter(self.workdir, enabled=self.is_main, start_step=self.step or None)
        bar = tqdm(total=total, initial=self.step, desc=desc, unit="step", disable=not self.is_main,
                   dynamic_ncols=True)
        try:
            yield writer, bar
        finally:
            self.checkpointer.wait()
            bar.close()
            writer.close()

    def save(self, host: dict, *, force: bool = False) -> None:
        """Starts saving the state and `host` (the loop's JSON items) at self.step."""
        self.state.save(self.step, host, force=force)

    def close(self) -> None:
        self.checkpointer.wait()
        self.checkpointer.close()
