"""The state of a training run, shared by the SFT trainer and the CMAT loop.

`RunState` builds, from a run's settings, everything an update needs: the mesh,
the model split into its graph definition, the frozen base and LoRA adapters,
their shardings, the optimizer and learning-rate schedule, and the
checkpointer. It holds one adapter per role (e.g. ('assistant',) for SFT,
('assistant', 'checker') for CMAT with a learned Checker) on one frozen base,
and an optimizer state for every role that is not frozen. All roles start from
the same initial adapters (B = 0, so each starts as the base model).

Updates run through `make_step(loss_fn)` (training/step.py), one jitted
program for every role (same shapes); `update(role, ...)` applies it to that
role's adapters and optimizer state, which the step donates. After an update,
take sampling weights anew (`sampling_weights(role)`): the old ones are freed.

Also here, for every loop (training/driver.py runs them in the lifecycle both loops share): the
checkpointer (which holds the workdir's lock, training/lock.py), the decision to start or resume and its
refusals (`resume_step`: a workdir's run is never restarted or mixed with another in silence), the restore
that falls back to the last intact checkpoint (`restore_intact`) and the run record (config.json).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from cmat_jax import distributed
from cmat_jax import sharding as sharding_lib
from cmat_jax.models.lora import LoRA
from cmat_jax.settings.run import RunSettings
from cmat_jax.training import build
from cmat_jax.fileio import write_text_atomic
from cmat_jax.training.checkpoint import (DEFAULT_ROLE, CheckpointUnreadable, Checkpointer, check_role,
                                          checkpoint_directory)
from cmat_jax.training.lock import lock_workdir
from cmat_jax.training.metrics import METRICS_FILE, TENSORBOARD_DIR, check_metrics_file, truncate_metrics_after
from cmat_jax.training.optimizer import make_optimizer, make_schedule
from cmat_jax.training.step import BATCH_KEYS, LossFn, make_train_step, sft_loss
from cmat_jax.training.workdir import CONFIG_FILE, START_OVER, config_for_resume, default_settings, run_records

# Settings a resumed run may change without changing the data order or the math of a step
# (train.steps only where the schedule allows it: see steps_change).
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "resume", "overwrite", "workdir", "mesh", "checkpoint",
                     "distributed")



# -- resume checks and the run record ------------------------------------------


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


def config_differences(saved: dict, current: dict, resumable: Sequence[str] = RESUMABLE_CHANGES,
                       defaults: Optional[dict] = None) -> list[str]:
    """Settings that differ between a saved run config and this one, ignoring `resumable` ones.

    A setting the saved config lacks (one added to the code after that run started) counts as unchanged
    when this run leaves it at its value in `defaults` (the code's default config), which keeps the old
    behaviour."""
    a, b = _flatten(saved), _flatten(current)
    d = _flatten(defaults) if defaults is not None else {}
    allowed = lambda name: any(name == p or name.startswith(p + ".") for p in resumable)  # noqa: E731
    added = lambda name: name not in a and name in d and b.get(name) == d[name]  # noqa: E731
    return [f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if not allowed(k) and not added(k) and a.get(k) != b.get(k)]


def make_checkpointer(config, workdir: str) -> Checkpointer:
    """The run's checkpointer, holding the workdir's lock (training/lock.py): a second run on the workdir is
    refused here, before anything reads or writes it. Process 0 takes the lock; every process gets its verdict.
    The checkpointer's close() releases it."""
    held = []

    def take() -> None:
        held.append(lock_workdir(workdir))

    distributed.on_main(take)
    c = config.checkpoint
    try:
        return Checkpointer(checkpoint_directory(config, workdir), every=int(c.every), keep=int(c.keep),
                            async_save=bool(c.async_save), lock=held[0] if held else None)
    except BaseException:
        for lock in held:
            lock.release()
        raise


def _fresh_start(config, directory: str, workdir: str, latest: Optional[int]) -> bool:
    """Refuses a fresh run on a workdir holding a run, unless config.overwrite; then deletes that run's files
    here (process 0) and returns True: its checkpoints are for every process to delete."""
    records, elsewhere = run_records(workdir, directory, latest)
    if not records:
        return False
    if not config.get("overwrite", False):
        raise FileExistsError(f"{workdir} already holds a run ({'; '.join(records)}); pass --config.resume=true "
                              "to continue it, --config.overwrite=true to replace it (deleting it), or choose another "
                              "--config.workdir")
    logging.warning("overwrite=true: deleting the run in %s (%s)%s", workdir, "; ".join(records),
                    f"; its checkpoints in {elsewhere} are left as they are" if elsewhere else "")
    for name in (METRICS_FILE, CONFIG_FILE):
        if os.path.isfile(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    shutil.rmtree(os.path.join(workdir, TENSORBOARD_DIR), ignore_errors=True)
    return latest is not None


def _nothing_to_resume(config, directory: str, workdir: str) -> None:
    """resume=true found no checkpoint: an error when the workdir holds a run's records, else a warning."""
    records, elsewhere = run_records(workdir, directory, None)
    if not records:
        logging.warning("resume requested, but %s holds no checkpoint in %s and no metrics: starting the run at "
                        "step 0", workdir, directory)
        return
    hint = (f"pass --config.checkpoint.directory={elsewhere} to continue from there" if elsewhere else
            "if the run kept its checkpoints elsewhere, pass --config.checkpoint.directory=<that directory>; if "
            f"it stopped before its first checkpoint, {START_OVER}")
    raise FileNotFoundError(f"cannot resume {workdir}: it holds {'; '.join(records)}, but no checkpoint was found "
                            f"in {directory} (checkpoint.directory={config.checkpoint.directory!r}); {hint}")


def resume_step(config, checkpointer: Checkpointer, workdir: str, *,
                resumable: Sequence[str] = RESUMABLE_CHANGES,
                extra_checks: Callable[[dict, dict], list[str]] = lambda saved, current: steps_change(
                    saved["train"], current["train"]),
                end_step: Optional[int] = None, end_field: str = "train.steps") -> Optional[int]:
    """The checkpoint to continue from, or None for a fresh start; refuses what would lose or mix up a run.

    - resume=false on a workdir that holds a run (checkpoints, metrics, or a config.json naming checkpoints
      elsewhere or unreadable) is refused, unless `overwrite`, which deletes that run first;
    - resume=true where no checkpoint is found but the workdir holds a run's records is refused, naming where
      checkpoints were looked for and how to point there;
    - a resumed run needs its config.json and must match it, except for `resumable` settings and what
      `extra_checks(saved, current)` allows; metrics.jsonl is read here (a bad line named before anything
      expensive is built);
    - a resumed run cannot end (at `end_step`, which `end_field` sets) before its latest checkpoint.
    Process 0 (which alone writes config.json) reads the files and decides; every process gets its verdict.
    """
    if config.resume and config.get("overwrite", False):
        raise ValueError("resume and overwrite are both true: resume=true continues the workdir's run, "
                         "overwrite=true replaces it; pass one of them")
    latest, directory = checkpointer.latest_step(), checkpointer.directory
    if not config.resume:
        if distributed.on_main(lambda: _fresh_start(config, directory, workdir, latest)):
            for step in checkpointer.all_steps():
                checkpointer.delete(step)
        return None
    if latest is None:
        distributed.on_main(lambda: _nothing_to_resume(config, directory, workdir))
        return None
    if end_step is not None and latest > end_step:
        raise ValueError(f"cannot resume {workdir}: its latest checkpoint is step {latest}, past step {end_step} "
                         f"where this config ends the run ({end_field}); a run cannot go back. Raise {end_field} "
                         "to go on, or use the checkpoints as they are (python -m cmat_jax.evaluate, "
                         "tools/export_hf.py)")

    def differences() -> list[str]:
        saved = config_for_resume(workdir)
        check_metrics_file(os.path.join(workdir, METRICS_FILE))
        current = json.loads(config.to_json())
        return config_differences(saved, current, resumable, default_settings(config.mode)) + \
            extra_checks(saved, current)

    diffs = distributed.on_main(differences)
    if diffs:
        raise ValueError(
            f"cannot resume {workdir}: its run used other settings, so the data order or the "
            "updates would differ:\n  " + "\n  ".join(diffs) +
            "\nresume with the original settings or start a new workdir"
        )
    return latest


def restore_intact(checkpointer: Checkpointer, restore: Callable[[int], object], latest: int) -> int:
    """Restores (with `restore(step)`) the newest step up to `latest` that reads back whole; returns that step.

    Each newer step that raised CheckpointUnreadable is then moved aside (Checkpointer.set_aside: renamed, never
    deleted), with one warning line. When no step restores, one CheckpointUnreadable says why each failed, and
    nothing is moved: a run whose every step fails alike has other settings or code than the run that wrote them.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted((s for s in checkpointer.all_steps() if s <= latest), reverse=True):
        try:
            restore(step)
        except CheckpointUnreadable as e:
            failures.append((step, str(e)))
            continue
        for bad, reason in failures:
            moved = checkpointer.set_aside(bad)
            logging.warning("%s; moved it to %s and resumed from step %d", reason, moved, step)
        return step
    raise CheckpointUnreadable(
        f"no checkpoint in {checkpointer.directory} can be restored ({'; '.join(r for _, r in failures)}); "
        f"if a step is damaged, so are the earlier ones: {START_OVER}", latest)


def record_run(config, workdir: str, step: int) -> None:
    """Writes the run's config (for resume checks and export) and drops metrics past `step` (main process only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    write_text_atomic(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))
    truncate_metrics_after(os.path.join(workdir, METRICS_FILE), step)


def check_batch_layout(rows: int, microbatches: int, mesh, rows_field: str = "data.batch_size") -> None:
    """Rows split into microbatches, and each microbatch over the mesh's data x fsdp devices."""
    if microbatches < 1 or rows % microbatches:
        raise ValueError(f"{rows_field} ({rows}) must be a multiple of train.microbatches ({microbatches})")
    shards = sharding_lib.batch_shards(mesh)
    if (rows // microbatches) % shards:
        raise ValueError(
            f"each microbatch has {rows // microbatches} rows ({rows_field} / train.microbatches), which the "
            f"{shards} devices of the mesh's data x fsdp axes cannot split evenly; make it a multiple of {shards}"
        )


# -- the state -------------------------------------------------------------------


class RunState:
    """Mesh, frozen base, per-role adapters and optimizer states, schedule, checkpointer.

    roles: the adapters held, one per role; frozen_roles: those never updated
    (no optimizer state). `mesh` overrides config.mesh; `checkpointer` None
    means this state is never saved.
    """

    def __init__(self, settings: RunSettings, *, mesh=None, roles: Sequence[str] = (DEFAULT_ROLE,),
                 frozen_roles: Sequence[str] = (), checkpointer: Optional[Checkpointer] = None):
        roles = tuple(check_role(r) for r in roles)
        if not roles or len(set(roles)) != len(roles):
            raise ValueError(f"roles must be distinct role names, at least one; found {roles}")
        unknown = sorted(set(frozen_roles) - set(roles))
        if unknown:
            raise ValueError(f"frozen roles {unknown} are not among the roles {list(roles)}")
        self.settings = settings
        self.roles = roles
        self.frozen_roles = tuple(r for r in roles if r in frozen_roles)
        self.checkpointer = checkpointer
        t = settings.train
        self.mesh = mesh if mesh is not None else build.make_mesh(settings.mesh)

        model = build.build_model(settings.model, settings.lora, settings.seed, self.mesh)
        self.model_config = model.cfg
        self.graphdef, lora, frozen = nnx.split(model, LoRA, ...)
        del model
        adapter_dtype = build.DTYPES[t.adapter_dtype]
        self.lora_shardings = sharding_lib.state_shardings(lora, self.mesh)
        self.frozen_shardings = sharding_lib.state_shardings(frozen, self.mesh)
        self.frozen = jax.device_put(frozen, self.frozen_shardings)
        initial = jax.device_put(jax.tree.map(lambda x: x.astype(adapter_dtype), lora), self.lora_shardings)
        # Every role its own buffers: an update donates one role's adapters, never another's.
        self.adapters = {role: initial if i == 0 else self._copy(initial) for i, role in enumerate(roles)}

        # A CMAT run without an SFT warm start (train.steps 0) has no train.* schedule; its RL step brings its own.
        self.schedule = make_schedule(peak_lr=t.learning_rate, total_steps=t.steps, warmup_steps=t.warmup_steps,
                                      decay=t.decay, end_lr_ratio=t.end_lr_ratio) if t.steps > 0 else None
        self.optimizer = make_optimizer(weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, b1=t.b1, b2=t.b2,
                                        eps=t.eps)
        abstract_opt = jax.eval_shape(self.optimizer.init, self.adapters[roles[0]])
        self.opt_shardings = sharding_lib.state_shardings(abstract_opt, self.mesh)
        self.opt_states = {role: self.fresh_opt_state(role) for role in self.trained_roles}
        self.batch_sharding = sharding_lib.batch_sharding(self.mesh, 2)

    def _copy(self, tree):
        return jax.tree.map(lambda x, s: jax.device_put(x, s, may_alias=False), tree, self.lora_shardings)

    @property
    def trained_roles(self) -> tuple[str, ...]:
        return tuple(r for r in self.roles if r not in self.frozen_roles)

    def _trained(self, role: str) -> str:
        if role not in self.roles:
            raise KeyError(f"role {role!r} has no adapters here; roles are {list(self.roles)}")
        if role in self.frozen_roles:
            raise ValueError(f"role {role!r} is frozen: it has no optimizer state and is never updated")
        return role

    def fresh_opt_state(self, role: str):
        """A new optimizer state for `role`'s adapters (e.g. to start a phase with its own moments)."""
        return jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(self.adapters[self._trained(role)])

    # -- updates ---------------------------------------------------------

    def make_step(self, loss_fn: LossFn = sft_loss, *, schedule=None, microbatches: Optional[int] = None,
                  chunk_size: Optional[int] = None) -> Callable:
        """The jitted step `(frozen, lora, opt_state, batch, step) -> (lora, opt_state, metrics)` for `loss_fn`.

        Defaults come from the train settings: their schedule, microbatches and loss_chunk_size
        (0: none); LoRA dropout (seeded by the run's seed) when lora.dropout > 0.
        """
        t = self.settings.train
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("train.steps is 0, so there is no train.* learning-rate schedule; pass a schedule")
        if chunk_size is None:
            chunk_size = t.chunk_size
        dropout = self.settings.lora.dropout > 0.0
        return make_train_step(
            self.graphdef, self.optimizer, schedule, mesh=self.mesh,
            lora_shardings=self.lora_shardings, opt_shardings=self.opt_shardings,
            microbatches=t.microbatches if microbatches is None else int(microbatches), chunk_size=chunk_size,
            dropout_seed=self.settings.seed if dropout else None, loss_fn=loss_fn,
        )

    def update(self, role: str, step_fn: Callable, batch: dict, step: int) -> dict:
        """One update of `role`'s adapters with `step_fn` on a placed batch; returns the device metrics."""
        role = self._trained(role)
        self.adapters[role], self.opt_states[role], metrics = step_fn(
            self.frozen, self.adapters[role], self.opt_states[role], batch, jnp.int32(step))
        return metrics

    def process_rows(self, rows: int) -> tuple[int, ...]:
        """The rows of a `rows`-row batch that this process's devices hold (increasing)."""
        return distributed.process_rows(self.batch_sharding, rows)

    def put_batch(self, batch: dict, *, keys: Sequence[str] = BATCH_KEYS, rows: Optional[int] = None,
                  rows_field: str = "data.batch_size", local: bool = False) -> dict:
        """Checks a host batch of [rows, t] arrays and places `keys` on the mesh.

        Every process holds the whole batch, or with `local` (and `rows`, the global count) only
        its own rows, `process_rows(rows)`, which become one global batch.
        """
        expected = rows
        if local:
            if rows is None:
                raise ValueError("put_batch(local=True) needs rows, the global batch's row count")
            held = self.process_rows(rows)
            expected, rows_field = len(held), f"process {jax.process_index()}'s share of {rows_field}"
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing}; a batch holds {', '.join(keys)}")
        shape = batch["tokens"].shape
        for key in keys:
            if batch[key].shape != shape:
                raise ValueError(f"batch[{key!r}] has shape {batch[key].shape}; expected {shape} like batch['tokens']")
        if expected is not None and shape[0] != expected:
            raise ValueError(f"the batch has {shape[0]} rows; {rows_field} is {expected}")
        vocab = self.model_config.vocab_size
        for key in ("tokens", "targets"):
            ids = batch[key] if key == "tokens" else batch[key][batch["loss_mask"] > 0]
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                raise ValueError(
                    f"batch[{key!r}] holds ids outside [0, {vocab}): the tokenizer does not match the model")
        if local:
            return {k: jax.make_array_from_process_local_data(self.batch_sharding, batch[k], (rows, shape[1]))
                    for k in keys}
        return {k: jax.make_array_from_callback(shape, self.batch_sharding, lambda index, a=batch[k]: a[index])
                for k in keys}

    # -- sampling --------------------------------------------------------

    def sampling_weights(self, role: str) -> tuple[nnx.GraphDef, nnx.State]:
        """(graphdef, full model state with `role`'s adapters) for Sampler.generate; take anew after each update."""
        if role not in self.roles:
            raise KeyError(f"role {role!r} has no adapters here; roles are {list(self.roles)}")
        return self.graphdef, nnx.merge_state(self.adapters[role], self.frozen)

    def model(self, role: str = DEFAULT_ROLE) -> nnx.Module:
        """The model with `role`'s adapters (sharing this state's arrays), e.g. to build a Sampler."""
        return nnx.merge(*self.sampling_weights(role))

    # -- checkpoints -----------------------------------------------------

    def _checkpointer(self, other: Optional[Checkpointer]) -> Checkpointer:
        if other is None and self.checkpointer is None:
            raise ValueError("this run state has no checkpointer; build it with checkpointer=...")
        return other if other is not None else self.checkpointer

    def save(self, step: int, host: dict, *, force: bool = False, checkpointer: Optional[Checkpointer] = None
             ) -> bool:
        """Starts saving every role's adapters, the trained roles' optimizer states and `host` (JSON) at `step`,
        with the run's checkpointer or `checkpointer` (another copy, e.g. the SFT twin's of the warm start)."""
        return self._checkpointer(checkpointer).save(step, adapters=self.adapters, opt_states=self.opt_states,
                                                     host=host, force=force)

    def restore(self, step: int, *, checkpointer: Optional[Checkpointer] = None) -> dict:
        """Loads every role's adapters and optimizer states of checkpoint `step` (of the run's checkpointer or
        `checkpointer`) onto this mesh; returns host items."""
        adapters, opt_states, host = self._checkpointer(checkpointer).restore(
            step, adapters={r: (self.adapters[r], self.lora_shardings) for r in self.roles},
            opt_states={r: (self.opt_states[r], self.opt_shardings) for r in self.trained_roles})
        self.adapters.update(adapters)
        self.opt_states.update(opt_states)
        return host

