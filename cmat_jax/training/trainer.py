"""The SFT trainer: config -> run state (training/run_state.py), data, checkpoints -> the loop.

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

import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cmat_jax import distributed, interrupts
from cmat_jax.training import build
from cmat_jax.training.checkpoint import DEFAULT_ROLE
from cmat_jax.training.metrics import MetricsWriter
from cmat_jax.training.run_state import (NONFINITE_MODES, RESUMABLE_CHANGES, NonFiniteError,  # noqa: F401
                                         RunState, absolute_paths, check_batch_layout, check_nonfinite_mode,
                                         config_differences, make_checkpointer, record_run, restore_intact,
                                         resume_step, steps_change)
from cmat_jax.training.step import BATCH_KEYS

PATH_SETTINGS = ("model.hf_dir", "data.tokenizer", "data.agent", "data.general")


_count_tokens = jax.jit(jnp.count_nonzero)  # a global batch's tokens, when each process holds some rows


def _state_attribute(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.state, name), doc=doc)


class Trainer:
    """Builds everything a run needs from its config; `train()` runs the loop."""

    def __init__(self, config, *, mesh=None, batches=None):
        """`mesh` overrides config.mesh (e.g. a sub-mesh of some devices); `batches`
        overrides the data config with any iterator that has state() and restore() (and yields whole
        batches; the trainer's own yield this process's rows)."""
        absolute_paths(config, PATH_SETTINGS)
        self.config = config
        self.workdir = os.path.abspath(config.workdir)
        t = config.train
        check_nonfinite_mode(t.nonfinite)
        self.is_main = jax.process_index() == 0
        self.checkpointer = make_checkpointer(config, self.workdir)
        resume_at = resume_step(config, self.checkpointer, self.workdir,  # before anything expensive is built
                                end_step=int(t.steps))

        mesh = mesh if mesh is not None else build.make_mesh(config.mesh)
        rows = int(config.data.batch_size)
        distributed.check_process_share(rows, "data.batch_size")
        check_batch_layout(rows, int(t.microbatches), mesh)
        # Data before the model: a malformed file fails in seconds, not after a 7B load.
        tokenizer = None
        self.local_rows = batches is None  # the trainer's own batches hold this process's rows only
        if batches is None:
            from cmat_jax.data import load_tokenizer
            from cmat_jax.sharding import batch_sharding

            tokenizer = load_tokenizer(build.tokenizer_path(config))
            batches = build.build_batches(config, tokenizer,
                                          rows=distributed.process_rows(batch_sharding(mesh, 2), rows))
        self.batches = batches

        self.state = RunState(config, mesh=mesh, checkpointer=self.checkpointer)
        if tokenizer is not None and len(tokenizer) > self.model_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary has "
                f"{self.model_config.vocab_size}; use the tokenizer that belongs to the model"
            )
        self.step_fn = self.state.make_step()
        self.step = 0  # updates done so far
        self.skipped_steps = 0
        if resume_at is not None:
            resume_at = restore_intact(self.checkpointer, self.restore, resume_at)
            logging.info("resumed %s at step %d", self.workdir, resume_at)
        record_run(self.config, self.workdir, self.step)

    # The run state's parts, under the names the loop and tools use.
    mesh = _state_attribute("mesh", "the device mesh")
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

    def restore(self, step: int) -> None:
        """Loads adapters, optimizer state and data position of checkpoint `step` onto this run's mesh."""
        host = self.state.restore(step)
        if "data" not in host:
            raise ValueError(f"checkpoint {step} in {self.checkpointer.directory} holds no data position (host "
                             f"items: {sorted(host)}); it was not written by an SFT run")
        self.batches.restore(host["data"])
        self.step = step

    # -- the loop --------------------------------------------------------

    def put_batch(self, batch: dict) -> dict:
        """Checks a host batch (this process's rows, or the whole batch for batches given to the
        constructor) and places it on the mesh."""
        return self.state.put_batch(batch, keys=BATCH_KEYS, rows=int(self.config.data.batch_size),
                                    local=self.local_rows)

    def train(self) -> list[dict]:
        """Runs from the current step to train.steps; returns the metrics of the steps it ran."""
        from tqdm import tqdm

        total = int(self.config.train.steps)
        log_every = max(int(self.config.train.log_every), 1)
        writer = MetricsWriter(self.workdir, enabled=self.is_main)
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not self.is_main,
                   dynamic_ncols=True)
        history: list[dict] = []
        pending: Optional[tuple[int, Any, int]] = None
        self._last_report = time.perf_counter()

        def report(step, device_metrics, tokens):
            record = self._read_metrics(step, device_metrics, tokens)
            history.append(record)
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if step % log_every == 0 or step == total:
                writer.write(step, record)

        try:
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
                    self.state.save(self.step, {"data": data_state}, force=self.step == total)
            if pending is not None:
                report(*pending)
        finally:
            self.checkpointer.wait()
            bar.close()
            writer.close()
        return history

    def _read_metrics(self, step: int, device_metrics, tokens: int) -> dict:
        m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        elapsed, self._last_report = now - self._last_report, now
        finite = bool(m.pop("finite"))
        if not finite:
            where = f"step {step} (update index {step - 1})"
            if self.config.train.nonfinite == "stop":
                latest = self.checkpointer.latest_step()
                raise NonFiniteError(
                    f"{where}: loss {m['loss']} / gradient norm {m['grad_norm']} is not finite; the update was "
                    f"not applied and training stopped. The last checkpoint ({latest}) holds finite weights. Lower "
                    "train.learning_rate, check the data around this step, or set train.nonfinite='skip'"
                )
            self.skipped_steps += 1
            logging.warning("%s: non-finite loss or gradient; update skipped (%d skipped so far)",
                            where, self.skipped_steps)
        return {"loss": m["loss"], "learning_rate": m["learning_rate"], "grad_norm": m["grad_norm"],
                "tokens_per_s": int(tokens) / max(elapsed, 1e-9), "loss_tokens": m["loss_tokens"],
                "skipped": float(not finite)}

    def close(self) -> None:
        self.checkpointer.wait()
        self.checkpointer.close()
