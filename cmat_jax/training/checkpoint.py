"""Train-state checkpoints with orbax: per-role adapters and optimizer states, host-side JSON.

Each saved step is a directory `<workdir>/checkpoints/<step>/` holding
  lora_<role>/       the LoRA adapters of each role as a nested dict (blocks/attn/q/lora_a, ...)
  opt_state_<role>/  the optimizer state of each trained role (a frozen role has none)
  host/              named JSON items of the loop: the data position (SFT); memory, curriculum,
                     RNG, iteration, advantage baseline (CMAT)
Checkpoints written before roles existed (items lora/, opt_state/, data/) are
read as role 'assistant' with host item 'data'.

The frozen base is never saved: it is rebuilt from the Hugging Face directory
(or the seeded random init) named in the run's config. Orbax writes each step
to a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoints intact. Restoring takes target
shardings, so a run saved on one mesh resumes on any other, and on any number
of processes: in a run of several processes every process calls save and
restore (orbax writes each array shard once, from the process that holds it,
and the host item from process 0), so the directory must be storage every
process sees: a local path for one host, a gs:// bucket or a shared file
system for several (docs/tpu.md).

A step that cannot be read back (a file missing, truncated or zero-length,
metadata that does not parse, a missing item) raises `CheckpointUnreadable`
naming the step and the reason; `set_aside(step)` renames such a step to
`<step>.unreadable` (never deleted: it may still be recovered by hand), so the
run can go on from the step before it (training/run_state.py's restore_intact).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from cmat_jax import distributed

DEFAULT_ROLE = "assistant"  # the role an SFT run trains
HOST_ITEM = "host"
# Item names of the single-adapter layout: adapters, optimizer state, data position.
LEGACY_LORA, LEGACY_OPT, LEGACY_DATA = "lora", "opt_state", "data"
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_URI = re.compile(r"[a-z][a-z0-9+.-]*://")  # gs://bucket/..., read through orbax's path library
# A step set aside: neither a step name to orbax (digits, or <prefix>_<digits>) nor one of its temporary names.
SET_ASIDE_SUFFIX = ".unreadable"


class CheckpointUnreadable(ValueError):
    """Checkpoint `step` cannot be restored (damaged, incomplete, or not this run's); the message says why."""

    def __init__(self, message: str, step: Optional[int] = None):
        super().__init__(message)
        self.step = step


def checkpoint_path(directory: str) -> str:
    """`directory` made absolute, unless it is a URI such as gs://bucket/run."""
    return directory if _URI.match(directory) else os.path.abspath(directory)


def checkpoint_directory(config, workdir: str) -> str:
    """A run's checkpoint.directory, or <workdir>/checkpoints when it is empty (or the config predates it)."""
    return config.checkpoint.get("directory", "") or os.path.join(workdir, "checkpoints")


def check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"role name {role!r} must be lower-case letters, digits and '_', starting with a letter")
    return role


def lora_item(role: str) -> str:
    return f"lora_{check_role(role)}"


def opt_item(role: str) -> str:
    return f"opt_state_{check_role(role)}"


def abstract_with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying the matching NamedShardings (restore targets)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _damage(error: BaseException) -> str:
    """A read failure in a few words: tensorstore's status and the file it names last (the one it could not
    read), or the first line of any other error."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(" [tensorstore_spec", 1)[0]  # the rest is the spec of the store, in escaped JSON
    status = re.match(r"([A-Z][A-Z_]+): ", text)
    paths = list(re.finditer(r'"(/[^"]+)"', text))
    if status and paths:
        return f"{status.group(1)} reading {paths[-1].group(1)}{text[paths[-1].end():][:160]}"
    return text[:200]


def _drop_closed_loop_reports() -> None:
    """Once per process: an orbax restore or save that fails closes its event loop while tensorstore still
    completes the other reads or writes, and each completion's callback then fails with RuntimeError('Event
    loop is closed'), reported as an unraisable exception: a traceback per array of the step, saying nothing
    the failure does not. Those are dropped; every other unraisable exception still goes to the hook before."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop_reports = True
    sys.unraisablehook = hook


class Checkpointer:
    """Saves every `every` steps, keeps the last `keep`, optionally in the background."""

    def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True, lock=None):
        """`lock`: a held training/lock.py WorkdirLock that close() releases."""
        if every <= 0:
            raise ValueError(f"checkpoint.every must be positive, found {every}")
        if keep <= 0:
            raise ValueError(f"checkpoint.keep must be positive, found {keep}")
        self.directory = checkpoint_path(directory)
        path = epath.Path(self.directory)
        if path.exists() and not path.is_dir():  # orbax would retry it for minutes, then time out
            raise NotADirectoryError(f"the checkpoint directory {self.directory} is a file, not a directory; move "
                                     "it away, or point --config.checkpoint.directory at a directory")
        self._lock = lock
        _drop_closed_loop_reports()
        # Orbax's default policy also saves the first step of a run; only the
        # interval (and preemption notices) should decide.
        policy = ocp.checkpoint_managers.AnySavePolicy([
            ocp.checkpoint_managers.FixedIntervalPolicy(every),
            ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
        ])
        options = ocp.CheckpointManagerOptions(save_decision_policy=policy, max_to_keep=keep,
                                               enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def step_items(self, step: int) -> set[str]:
        """Names of the items saved at `step`."""
        path = epath.Path(self.directory) / str(step)
        if step not in self.all_steps() or not path.is_dir():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: {self.all_steps() or 'none'}"
            )
        return {child.name for child in path.iterdir() if child.is_dir()}

    def saved_roles(self, step: int) -> tuple[list[str], list[str]]:
        """(roles with adapters, roles with optimizer state) at `step`."""
        items = self.step_items(step)
        if LEGACY_LORA in items:
            return [DEFAULT_ROLE], [DEFAULT_ROLE] if LEGACY_OPT in items else []
        adapters = sorted(n[len("lora_"):] for n in items if n.startswith("lora_"))
        opts = sorted(n[len("opt_state_"):] for n in items if n.startswith("opt_state_"))
        return adapters, opts

    def save(self, step: int, *, adapters: Mapping[str, nnx.State], opt_states: Mapping[str, Any],
             host: Mapping[str, Any], force: bool = False) -> bool:
        """Starts saving `step` (returns at once when async); False if the interval skips it.

        `adapters` and `opt_states` map role names to states; `host` maps names to JSON-serialisable values.
        """
        items = {lora_item(role): ocp.args.StandardSave(nnx.to_pure_dict(lora)) for role, lora in adapters.items()}
        items.update({opt_item(role): ocp.args.StandardSave(opt) for role, opt in opt_states.items()})
        items[HOST_ITEM] = ocp.args.JsonSave(dict(host))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, *, adapters: Mapping[str, tuple[nnx.State, Any]],
                opt_states: Mapping[str, tuple[Any, Any]], host: bool = True) -> tuple[dict, dict, dict]:
        """Reads `step` onto the given shardings: ({role: adapters}, {role: optimizer state}, host items).

        `adapters` and `opt_states` map each role to restore to (target, shardings): (abstract)
        states of the current run whose structure, shapes and dtypes the checkpoint must match.
        `host`: the step must hold its host item (a run resumes from it; export reads adapters alone).
        CheckpointUnreadable when the step cannot be read whole; nothing of this run changes then.
        """
        items = self.step_items(step)
        legacy = LEGACY_LORA in items
        saved_adapters, saved_opts = self.saved_roles(step)
        where = f"checkpoint {self.directory}/{step}"
        for kind, wanted, saved in (("adapters", adapters, saved_adapters), ("optimizer states", opt_states,
                                                                           saved_opts)):
            missing = sorted(set(wanted) - set(saved))
            if missing:
                raise CheckpointUnreadable(
                    f"{where} holds {kind} of roles {saved}; this run also needs {missing}. Resume with the "
                    "roles (and frozen roles) the run was started with", step)
        names = {}
        args = {}
        for role, (target, shardings) in adapters.items():
            names[("lora", role)] = name = LEGACY_LORA if legacy else lora_item(role)
            args[name] = ocp.args.StandardRestore(
                abstract_with_shardings(nnx.to_pure_dict(target), nnx.to_pure_dict(shardings)))
        for role, (target, shardings) in opt_states.items():
            names[("opt", role)] = name = LEGACY_OPT if legacy else opt_item(role)
            args[name] = ocp.args.StandardRestore(abstract_with_shardings(target, shardings))
        host_name = LEGACY_DATA if legacy else HOST_ITEM
        if host_name in items:
            args[host_name] = ocp.args.JsonRestore()
        elif host:
            raise CheckpointUnreadable(f"{where} lacks its {host_name}/ item (the loop's position)", step)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        except (ValueError, KeyError, TypeError, OSError) as e:  # tensorstore and json report damage so
            raise CheckpointUnreadable(f"{where} cannot be read ({_damage(e)})", step) from e
        out_adapters = {}
        for role, (target, _) in adapters.items():
            lora = jax.tree.map(lambda x: x, target)  # a fresh State of the same structure
            nnx.replace_by_pure_dict(lora, restored[names[("lora", role)]])
            out_adapters[role] = lora
        out_opts = {role: restored[names[("opt", role)]] for role in opt_states}
        host = {} if host_name not in items else \
            {LEGACY_DATA: restored[host_name]} if legacy else dict(restored[host_name])
        return out_adapters, out_opts, host

    def restore_adapters(self, step: int, lora_target: nnx.State, lora_shardings, *,
                         role: str = DEFAULT_ROLE) -> nnx.State:
        """Only the adapters of `role` at `step` (for export and evaluation)."""
        adapters, _, _ = self.restore(step, adapters={role: (lora_target, lora_shardings)}, opt_states={},
                                      host=False)
        return adapters[role]

    def set_aside(self, step: int) -> str:
        """Renames step `step` to <step>.unreadable (or <step>.unreadable.<n> when taken; process 0 renames) and
        returns the new path; the run then sees the steps before it as the latest."""

        def rename() -> str:
            source = epath.Path(self.directory) / str(step)
            target = epath.Path(self.directory) / f"{step}{SET_ASIDE_SUFFIX}"
            n = 0
            while target.exists():
                n += 1
                target = epath.Path(self.directory) / f"{step}{SET_ASIDE_SUFFIX}.{n}"
            source.rename(target)
            return os.fspath(target)

        moved = distributed.on_main(rename)
        self._manager.reload()
        return moved

    def delete(self, step: int) -> None:
        """Deletes step `step` (a fresh run with --config.overwrite=true replaces the one before it)."""
        self._manager.delete(step)

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Closes the manager (after wait(), to keep a save in flight) and releases the workdir lock, if held."""
        try:
            self._manager.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
