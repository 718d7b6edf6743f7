"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8
(the flag must be set before jax is imported; see test_multidevice.py).

Prints one JSON object:
  meshes:  for each mesh, the largest relative difference from one device of the
           per-step losses and of the per-step adapter gradients
  restore: training killed on one mesh and resumed on another vs one device
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax

from cmat_jax import sharding as sharding_lib
from cmat_jax.settings.run import parse_run
from cmat_jax.training.step import loss_and_grads
from cmat_jax.training.trainer import Trainer
from tests.training.common import KilledAt, relative_difference, tiny_config

MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]
STEPS = 3  # compared per mesh
RUN_STEPS = 6  # train.steps of tiny_config


def config_for(workdir, data, mesh, **overrides):
    settings = {"data.batch_size": 16, "train.microbatches": 2, "train.loss_chunk_size": 24,
                "mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]}
    settings.update(overrides)
    return tiny_config(workdir, data, **settings)


def losses_and_grads(trainer, steps=STEPS):
    """(loss per step, adapter gradients per step), gradients taken before each update."""
    t = trainer.settings.train

    def grads_fn(frozen, lora, batch):
        with sharding_lib.activation_sharding(trainer.mesh):
            return loss_and_grads(trainer.graphdef, frozen, lora, batch, microbatches=t.microbatches,
                                  chunk_size=t.loss_chunk_size)[2]

    grads_fn = jax.jit(grads_fn)
    losses, grads = [], []
    for step in range(steps):
        batch = trainer.put_batch(next(trainer.batches))
        grads.append(jax.tree.map(lambda x: jax.device_get(x), grads_fn(trainer.frozen, trainer.lora, batch)))
        trainer.lora, trainer.opt_state, metrics = trainer.step_fn(
            trainer.frozen, trainer.lora, trainer.opt_state, batch, jax.numpy.int32(step))
        losses.append(float(metrics["loss"]))
    trainer.close()
    return losses, grads


def compare(result, reference):
    (losses, grads), (ref_losses, ref_grads) = result, reference
    ref_losses, ref_grads = ref_losses[:len(losses)], ref_grads[:len(grads)]
    loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    grad_diff = max(relative_difference(a, b) for step_grads, step_ref in zip(grads, ref_grads)
                    for a, b in zip(jax.tree.leaves(step_grads), jax.tree.leaves(step_ref)))
    return {"loss": loss_diff, "grads": grad_diff}


def main():
    assert jax.device_count() == 8, f"expected 8 simulated devices, found {jax.device_count()}"
    one_device = sharding_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    out = {"meshes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/data"
        # One device, all the run's steps: the reference for every mesh and for the restore below.
        reference = losses_and_grads(Trainer(parse_run(config_for(f"{tmp}/ref", data, (1, 1, 1))), mesh=one_device),
                                     steps=RUN_STEPS)
        expected = reference[0]
        for mesh in MESHES:
            trainer = Trainer(parse_run(config_for(f"{tmp}/{mesh}", data, mesh)))
            out["meshes"][str(mesh)] = compare(losses_and_grads(trainer), reference)

        # Restore onto another mesh: killed on (8,1,1) after checkpoint 4, resumed on (1,4,2).
        killed = Trainer(parse_run(config_for(f"{tmp}/moved", data, (8, 1, 1))))
        killed.batches = KilledAt(killed.batches, 5)
        try:
            killed.train()
        except KeyboardInterrupt:
            pass
        killed.close()
        resumed = Trainer(parse_run(config_for(f"{tmp}/moved", data, (1, 4, 2), resume=True)))
        leaf = jax.tree.leaves(resumed.lora)[0]
        target = jax.tree.leaves(resumed.lora_shardings)[0]
        restored_at = resumed.step
        losses = [h["loss"] for h in resumed.train()]
        resumed.close()
        out["restore"] = {
            "restored_at": restored_at,
            "sharding_matches": leaf.sharding.is_equivalent_to(target, leaf.ndim),
            "loss": max(abs(a - b) / abs(b) for a, b in zip(losses, expected[restored_at:])),
            "steps_after_restore": len(losses),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
