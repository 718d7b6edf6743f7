"""The SFT trainer: config -> mesh, model, sharded state, data, checkpoints -> the loop.

State layout. The model is split into its graph definition, the LoRA
adapters (the only thing optimised, kept in `train.adapter_dtype`) and the
frozen base. Base, adapters and optimizer state are placed on the mesh by the
logical-axis rules of `cmat_jax.sharding`; each batch is placed with its rows
over the `data` and `fsdp` axes.

The loop dispatches step s+1 before reading the metrics of step s, so the host
prepares the next batch while the device computes. Before every checkpoint the
pending metrics are read, so a non-finite step is caught before anything after
it is saved.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from cmat_jax import sharding as sharding_lib
from cmat_jax.models.lora import LoRA
from cmat_jax.training import build
from cmat_jax.training.checkpoint import Checkpointer
from cmat_jax.training.metrics import MetricsWriter, truncate_metrics_after
from cmat_jax.training.optimizer import make_optimizer, make_schedule
from cmat_jax.training.step import BATCH_KEYS, make_train_step

NONFINITE_MODES = ("stop", "skip")
PATH_SETTINGS = ("model.hf_dir", "data.tokenizer", "data.agent", "data.general")
# Settings a resumed run may change without changing the data order or the math of a step
# (train.steps only where the schedule allows it: see steps_change).
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "resume", "workdir", "mesh", "checkpoint")


class NonFiniteError(FloatingPointError):
    """A step produced a non-finite loss or gradient and train.nonfinite is 'stop'."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def steps_change(saved_train: dict, train: dict) -> list[str]:
    """A change of train.steps that would change the learning rate of the remaining steps."""
    old, new = saved_train.get("steps"), train.get("steps")
    if old == new or (train.get("decay") == "constant" and train.get("warmup_steps", 0) <= min(old, new)):
        return []
    return [f"train.steps: saved {old!r}, now {new!r} (the {train.get('decay')!r} schedule spans train.steps, so "
            "every remaining learning rate would change; only a train.decay='constant' run past its warmup can "
            "change its length)"]


def config_differences(saved: dict, current: dict) -> list[str]:
    """Settings that differ between a saved run config and this one, ignoring RESUMABLE_CHANGES."""
    a, b = _flatten(saved), _flatten(current)
    allowed = lambda name: any(name == p or name.startswith(p + ".") for p in RESUMABLE_CHANGES)  # noqa: E731
    return [f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if not allowed(k) and a.get(k) != b.get(k)]


class Trainer:
    """Builds everything a run needs from its config; `train()` runs the loop."""

    def __init__(self, config, *, mesh=None, batches=None):
        """`mesh` overrides config.mesh (e.g. a sub-mesh of some devices); `batches`
        overrides the data config with any iterator that has state() and restore()."""
        for key in PATH_SETTINGS:  # recorded absolute: export and resume may run from another directory
            section, name = key.split(".")
            if config[section][name]:
                config[section][name] = os.path.abspath(config[section][name])
        self.config = config
        self.workdir = os.path.abspath(config.workdir)
        t = config.train
        if t.nonfinite not in NONFINITE_MODES:
            raise ValueError(f"train.nonfinite is {t.nonfinite!r}; choose from {', '.join(NONFINITE_MODES)}")
        self.is_main = jax.process_index() == 0
        c = config.checkpoint
        self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), every=int(c.every),
                                         keep=int(c.keep), async_save=bool(c.async_save))
        resume_step = self._resume_step()  # checked before anything expensive is built

        # Data before the model: a malformed file fails in seconds, not after a 7B load.
        tokenizer = None
        if batches is None:
            from cmat_jax.data import load_tokenizer

            tokenizer = load_tokenizer(build.tokenizer_path(config))
            batches = build.build_batches(config, tokenizer)
        self.batches = batches

        self.mesh = mesh if mesh is not None else build.make_mesh(config.mesh)
        self._check_batch_layout()
        model = build.build_model(config, self.mesh)
        self.model_config = model.cfg
        if tokenizer is not None and len(tokenizer) > self.model_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary has "
                f"{self.model_config.vocab_size}; use the tokenizer that belongs to the model"
            )
        self.graphdef, lora, frozen = nnx.split(model, LoRA, ...)
        del model
        adapter_dtype = build.dtype_from_name(t.adapter_dtype, "train.adapter_dtype")
        self.lora_shardings = sharding_lib.state_shardings(lora, self.mesh)
        self.frozen_shardings = sharding_lib.state_shardings(frozen, self.mesh)
        self.frozen = jax.device_put(frozen, self.frozen_shardings)
        self.lora = jax.device_put(jax.tree.map(lambda x: x.astype(adapter_dtype), lora), self.lora_shardings)

        self.schedule = make_schedule(peak_lr=float(t.learning_rate), total_steps=int(t.steps),
                                      warmup_steps=int(t.warmup_steps), decay=t.decay,
                                      end_lr_ratio=float(t.end_lr_ratio))
        self.optimizer = make_optimizer(weight_decay=float(t.weight_decay), max_grad_norm=float(t.max_grad_norm),
                                        b1=float(t.b1), b2=float(t.b2), eps=float(t.eps))
        abstract_opt = jax.eval_shape(self.optimizer.init, self.lora)
        self.opt_shardings = sharding_lib.state_shardings(abstract_opt, self.mesh)
        self.opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(self.lora)

        self.batch_sharding = sharding_lib.batch_sharding(self.mesh, 2)

        dropout = float(config.lora.dropout) > 0.0
        self.step_fn = make_train_step(
            self.graphdef, self.optimizer, self.schedule, mesh=self.mesh, lora_shardings=self.lora_shardings,
            opt_shardings=self.opt_shardings, microbatches=int(t.microbatches),
            chunk_size=int(t.loss_chunk_size) if t.loss_chunk_size else None,
            dropout_seed=int(config.seed) if dropout else None,
        )
        self.step = 0  # updates done so far
        self.skipped_steps = 0
        if resume_step is not None:
            self.restore(resume_step)
            logging.info("resumed %s at step %d", self.workdir, resume_step)
        self._record_run()

    # -- setup -----------------------------------------------------------

    def _check_batch_layout(self) -> None:
        rows = int(self.config.data.batch_size)
        micro = int(self.config.train.microbatches)
        if micro < 1 or rows % micro:
            raise ValueError(f"data.batch_size ({rows}) must be a multiple of train.microbatches ({micro})")
        shards = sharding_lib.batch_shards(self.mesh)
        if (rows // micro) % shards:
            raise ValueError(
                f"each microbatch has {rows // micro} rows (data.batch_size / train.microbatches), which the "
                f"{shards} devices of the mesh's data x fsdp axes cannot split evenly; make it a multiple of {shards}"
            )

    def _resume_step(self) -> Optional[int]:
        """The checkpoint to continue from, or None for a fresh start; refuses unsafe combinations."""
        latest = self.checkpointer.latest_step()
        if latest is None:
            if self.config.resume:
                logging.info("resume requested but %s holds no checkpoint; starting at step 0", self.workdir)
            return None
        if not self.config.resume:
            raise FileExistsError(
                f"{self.workdir} already holds checkpoints (latest step {latest}); pass --config.resume=true to "
                "continue that run, or choose another --config.workdir"
            )
        config_path = os.path.join(self.workdir, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                saved, current = json.load(f), json.loads(self.config.to_json())
            diffs = config_differences(saved, current) + steps_change(saved["train"], current["train"])
            if diffs:
                raise ValueError(
                    f"cannot resume {self.workdir}: its run used other settings, so the data order or the "
                    "updates would differ:\n  " + "\n  ".join(diffs) +
                    "\nresume with the original settings or start a new workdir"
                )
        return latest

    def _record_run(self) -> None:
        """Writes the run's config (for resume checks and export) and drops metrics past the restored step."""
        if not self.is_main:
            return
        os.makedirs(self.workdir, exist_ok=True)
        config_path = os.path.join(self.workdir, "config.json")
        with open(config_path + ".tmp", "w", encoding="utf-8") as f:
            f.write(self.config.to_json(indent=2))
        os.replace(config_path + ".tmp", config_path)
        truncate_metrics_after(os.path.join(self.workdir, "metrics.jsonl"), self.step)

    def restore(self, step: int) -> None:
        """Loads adapters, optimizer state and data position of checkpoint `step` onto this run's mesh."""
        self.lora, self.opt_state, data_state = self.checkpointer.restore(
            step, self.lora, self.lora_shardings, self.opt_state, self.opt_shardings)
        self.batches.restore(data_state)
        self.step = step

    # -- the loop --------------------------------------------------------

    def put_batch(self, batch: dict) -> dict:
        """Checks a host batch and places it on the mesh (every host holds the whole batch)."""
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing}; a batch holds {', '.join(BATCH_KEYS)}")
        shape = batch["tokens"].shape
        for key in BATCH_KEYS:
            if batch[key].shape != shape:
                raise ValueError(f"batch[{key!r}] has shape {batch[key].shape}; expected {shape} like batch['tokens']")
        if shape[0] != int(self.config.data.batch_size):
            raise ValueError(f"the batch has {shape[0]} rows; data.batch_size is {self.config.data.batch_size}")
        vocab = self.model_config.vocab_size
        for key in ("tokens", "targets"):
            ids = batch[key] if key == "tokens" else batch[key][batch["loss_mask"] > 0]
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                raise ValueError(
                    f"batch[{key!r}] holds ids outside [0, {vocab}): the tokenizer does not match the model")
        return {k: jax.make_array_from_callback(shape, self.batch_sharding, lambda index, a=batch[k]: a[index])
                for k in BATCH_KEYS}

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
                host_batch = next(self.batches)
                data_state = self.batches.state()
                tokens = int(np.count_nonzero(host_batch["segment_ids"]))
                batch = self.put_batch(host_batch)
                self.lora, self.opt_state, device_metrics = self.step_fn(
                    self.frozen, self.lora, self.opt_state, batch, jnp.int32(self.step))
                self.step += 1
                if pending is not None:
                    report(*pending)
                pending = (self.step, device_metrics, tokens)
                if self.step == total or self.checkpointer.should_save(self.step):
                    report(*pending)
                    pending = None
                    self.checkpointer.save(self.step, self.lora, self.opt_state, data_state,
                                           force=self.step == total)
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
                "tokens_per_s": tokens / max(elapsed, 1e-9), "loss_tokens": m["loss_tokens"],
                "skipped": float(not finite)}

    def close(self) -> None:
        self.checkpointer.wait()
        self.checkpointer.close()
