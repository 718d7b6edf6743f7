"""The SFT trainer: run settings -> run state (training/run_state.py), data, checkpoints -> the loop.

Start, resume, the non-finite guard, metric records, checkpoints and close are
the lifecycle it shares with the CMAT loop (training/driver.py).

State layout. The run state splits the model into its graph definition, the
LoRA adapters of role 'assistant' (the only thing optimised, kept in
`train.adapter_dtype`) and the frozen base. Base, adapters and optimizer state
are placed on the mesh by the logical-axis rules of `cmat_jax.sharding`; each
batch is placed with its rows over the `data` and `fsdp` axes. Checkpoints
hold the adapters, the optimizer state and the data position (host item 'data').

Several processes (cmat_jax/distributed.py): each builds only the rows of the
batch that its devices hold and the processes' rows become one global batch;
the data position stays the global stream position, so a run resumes on any
number of processes. Only process 0 writes metrics and TensorBoard events.

The loop dispatches step s+1 before reading the metrics of step s, so the host
prepares the next batch while the device computes. Before every checkpoint the
pending metrics are read, so a non-finite step is caught before anything after
it is saved.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cmat_jax import distributed, interrupts
from cmat_jax.settings.run import RunSettings
from cmat_jax.training import build
from cmat_jax.training.checkpoint import DEFAULT_ROLE
from cmat_jax.training.driver import Driver
from cmat_jax.training.run_state import check_batch_layout
from cmat_jax.training.step import BATCH_KEYS

_count_tokens = jax.jit(jnp.count_nonzero)  # a global batch's tokens, when each process holds some rows


def _state_attribute(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.state, name), doc=doc)


class Trainer(Driver):
    """Builds everything an SFT run needs from its settings; `train()` runs the loop."""

    def __init__(self, settings: RunSettings, *, mesh=None, batches=None):
        """`mesh` overrides the mesh settings (e.g. a sub-mesh of some devices); `batches` overrides the data
        settings with any iterator that has state() and restore() (and yields whole batches; the trainer's
        own yield this process's rows)."""
        # The resume checks, before anything expensive is built.
        super().__init__(settings, mesh=mesh, end_step=settings.train.steps)
        rows = settings.data.batch_size
        distributed.check_process_share(rows, "data.batch_size")
        check_batch_layout(rows, settings.train.microbatches, self.mesh)
        # Data before the model: a malformed file fails in seconds, not after a 7B load.
        tokenizer = None
        self.local_rows = batches is None  # the trainer's own batches hold this process's rows only
        if batches is None:
            from cmat_jax.data import load_tokenizer
            from cmat_jax.sharding import batch_sharding

            tokenizer = load_tokenizer(build.tokenizer_path(settings))
            batches = build.build_batches(settings.data, tokenizer, settings.data.agent,
                                          rows=distributed.process_rows(batch_sharding(self.mesh, 2), rows))
        self.batches = batches
        self.build_state(tokenizer)
        self.step_fn = self.state.make_step()
        self.resume()

    # The run state's parts, under the names the loop and tools use.
    graphdef = _state_attribute("graphdef", "the model's graph definition")
    frozen = _state_attribute("frozen", "the frozen base parameters")
    model_config = _state_attribute("model_config", "the model's ModelConfig")
    lora_shardings = _state_attribute("lora_shardings", "shardings of the adapters")
    opt_shardings = _state_attribute("opt_shardings", "shardings of the optimizer state")
    frozen_shardings = _state_attribute("frozen_shardings", "shardings of the frozen base")
    batch_sharding = _state_attribute("batch_sharding", "sharding of a [rows, t] batch array")
    schedule = _state_attribute("schedule", "the learning-rate schedule")
    optimizer = _state_attribute("optimizer", "the optimizer")

    @property
    def lora(self):
        """The trained adapters (role 'assistant')."""
        return self.state.adapters[DEFAULT_ROLE]

    @lora.setter
    def lora(self, value):
        self.state.adapters[DEFAULT_ROLE] = value

    @property
    def opt_state(self):
        return self.state.opt_states[DEFAULT_ROLE]

    @opt_state.setter
    def opt_state(self, value):
        self.state.opt_states[DEFAULT_ROLE] = value

    def restore_host(self, host: dict) -> None:
        """The data position of the checkpoint being resumed."""
        if "data" not in host:
            raise ValueError(f"checkpoint {self.resume_at} in {self.checkpointer.directory} holds no data position "
                             f"(host items: {sorted(host)}); it was not written by an SFT run")
        self.batches.restore(host["data"])

    # -- the loop --------------------------------------------------------

    def put_batch(self, batch: dict) -> dict:
        """Checks a host batch (this process's rows, or the whole batch for batches given to the
        constructor) and places it on the mesh."""
        return self.state.put_batch(batch, keys=BATCH_KEYS, rows=self.settings.data.batch_size,
                                    local=self.local_rows)

    def train(self) -> list[dict]:
        """Runs from the current step to train.steps; returns the metrics of the steps it ran."""
        total, log_every = self.settings.train.steps, self.settings.train.log_every
        history: list[dict] = []
        pending: Optional[tuple[int, Any, int]] = None
        self._last_report = time.perf_counter()
        with self.records(total, "train") as (writer, bar):

            def report(step, device_metrics, tokens):
                record = self._record(step, device_metrics, tokens)
                history.append(record)
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                if step % log_every == 0 or step == total:
                    writer.write(step, record)

            while self.step < total:
                interrupts.check()  # a signal stops the run here, between steps
                host_batch = next(self.batches)
                data_state = self.batches.state()
                batch = self.put_batch(host_batch)
                tokens = int(np.count_nonzero(host_batch["segment_ids"])) if jax.process_count() == 1 else \
                    _count_tokens(batch["segment_ids"])  # read with the metrics, a step later
                self.lora, self.opt_state, device_metrics = self.step_fn(
                    self.frozen, self.lora, self.opt_state, batch, jnp.int32(self.step))
                self.step += 1
                if pending is not None:
                    report(*pending)
                pending = (self.step, device_metrics, tokens)
                if self.step == total or self.checkpointer.should_save(self.step):
                    report(*pending)
                    pending = None
                    self.save({"data": data_state}, force=self.step == total)
            if pending is not None:
                report(*pending)
        return history

    def _record(self, step: int, device_metrics, tokens: int) -> dict:
        m, finite = self.read_metrics(device_metrics, where=f"step {step} (update index {step - 1})")
        now = time.perf_counter()
        elapsed, self._last_report = now - self._last_report, now
        return {"loss": m["loss"], "learning_rate": m["learning_rate"], "grad_norm": m["grad_norm"],
                "tokens_per_s": int(tokens) / max(elapsed, 1e-9), "loss_tokens": m["loss_tokens"],
                "skipped": float(not finite)}
