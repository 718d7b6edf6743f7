"""Train-state checkpoints with orbax: adapters, optimizer state, data position.

Each saved step is a directory `<workdir>/checkpoints/<step>/` holding
  lora/       the LoRA adapters as a nested dict (blocks/attn/q/lora_a, ...)
  opt_state/  the optimizer state
  data/       the data iterator's resumable state (JSON)
The frozen base is never saved: it is rebuilt from the Hugging Face directory
(or the seeded random init) named in the run's config. Orbax writes each step
to a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoints intact. Restoring takes target
shardings, so a run saved on one mesh resumes on any other.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from flax import nnx


def abstract_with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying the matching NamedShardings (restore targets)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpointer:
    """Saves every `every` steps, keeps the last `keep`, optionally in the background."""

    def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
        if every <= 0:
            raise ValueError(f"checkpoint.every must be positive, found {every}")
        if keep <= 0:
            raise ValueError(f"checkpoint.keep must be positive, found {keep}")
        self.directory = os.path.abspath(directory)
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

    def save(self, step: int, lora: nnx.State, opt_state: Any, data_state: dict, *, force: bool = False) -> bool:
        """Starts saving `step` (returns at once when async); False if the interval skips it."""
        args = ocp.args.Composite(
            lora=ocp.args.StandardSave(nnx.to_pure_dict(lora)),
            opt_state=ocp.args.StandardSave(opt_state),
            data=ocp.args.JsonSave(data_state),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, step: int, lora_target: nnx.State, lora_shardings, opt_target, opt_shardings
                ) -> tuple[nnx.State, Any, dict]:
        """Reads `step` onto the given shardings.

        `lora_target` and `opt_target` are (abstract) states of the current run
        whose structure, shapes and dtypes the checkpoint must match.
        """
        if step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: {self.all_steps() or 'none'}"
            )
        lora_pure = abstract_with_shardings(nnx.to_pure_dict(lora_target), nnx.to_pure_dict(lora_shardings))
        args = ocp.args.Composite(
            lora=ocp.args.StandardRestore(lora_pure),
            opt_state=ocp.args.StandardRestore(abstract_with_shardings(opt_target, opt_shardings)),
            data=ocp.args.JsonRestore(),
        )
        try:
            restored = self._manager.restore(step, args=args)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not fit this run's adapters or optimizer ({e}); "
                "resume with the LoRA, model and optimizer settings the run was started with"
            ) from e
        lora = jax.tree.map(lambda x: x, lora_target)  # a fresh State of the same structure
        nnx.replace_by_pure_dict(lora, restored["lora"])
        return lora, restored["opt_state"], restored["data"]

    def restore_adapters(self, step: int, lora_target: nnx.State, lora_shardings) -> nnx.State:
        """Only the adapters of `step` (for export and evaluation)."""
        lora_pure = abstract_with_shardings(nnx.to_pure_dict(lora_target), nnx.to_pure_dict(lora_shardings))
        restored = self._manager.restore(step, args=ocp.args.Composite(lora=ocp.args.StandardRestore(lora_pure)))
        lora = jax.tree.map(lambda x: x, lora_target)
        nnx.replace_by_pure_dict(lora, restored["lora"])
        return lora

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
