"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8
(the flag must be set before jax is imported; see test_multidevice.py).

The RL update (PPO with a KL term to the frozen base, two microbatches, chunked
logits) on each mesh vs one device. Prints one JSON object: for each mesh, the
largest relative difference from one device of the per-step losses, reported
token means (kl, entropy, clip_frac) and adapter gradients, taken at one device's
adapters, and of the losses of the mesh's own sharded updates.
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax
import numpy as np

from cmat_jax import sharding as sharding_lib
from cmat_jax.rl.objectives import ObjectiveConfig, objective_loss, token_logprobs
from cmat_jax.rl.rows import RL_BATCH_KEYS, Segment, pack_segments
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.settings.run import parse_run
from cmat_jax.training.run_state import RunState
from cmat_jax.training.step import loss_grads_and_metrics
from tests.training.common import relative_difference, tiny_config

MESHES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]
STEPS = 3
ROWS, SEQ_LEN = 16, 64
OBJECTIVE = ObjectiveConfig("ppo", clip_eps=0.2, kl_coef=0.05, sampling=SamplingPolicy(temperature=0.9))


def config_for(tmp, mesh):
    return tiny_config(f"{tmp}/{mesh}", f"{tmp}/data", **{
        "train.microbatches": 2, "train.loss_chunk_size": 24, "lora.rank": 4,
        "mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})


def make_batches(state: RunState) -> list[dict]:
    """Packed rows whose recorded log-probs are the initial policy's, perturbed (some tokens clip)."""
    rng = np.random.default_rng(0)
    segments = []
    for _ in range(150):
        n = int(rng.integers(10, 40))
        prompt = int(rng.integers(3, n - 2))
        mask = np.r_[np.zeros(prompt), (rng.random(n - prompt) < 0.8)].astype(np.int32)
        segments.append(Segment(ids=rng.integers(0, 1024, n), loss_mask=mask, logprobs=np.zeros(n),
                                advantages=np.where(mask > 0, rng.normal(), 0.0)))
    batches = pack_segments(segments, rows=ROWS, seq_len=SEQ_LEN)[:STEPS]
    model = state.model()
    for batch in batches:
        current = np.asarray(token_logprobs(model, batch, OBJECTIVE))
        noisy = np.minimum(current + rng.normal(0, 0.2, current.shape), 0.0)
        batch["old_logprobs"] = np.where(batch["loss_mask"] > 0, noisy, 0.0).astype(np.float32)
    return batches


def run(state: RunState, batches, weights=None):
    """Per step: (loss, reported means, adapter gradients) taken before the update, the update's own loss,
    and the adapters the update started from (read back only without `weights`).

    With `weights` (one device's adapters before each step), loss, means and gradients are taken at those
    adapters instead of this run's own: Adam turns float32 rounding in near-zero gradients into weight
    differences of 1e-5 within two steps, so gradients compared along two separate trajectories measure the
    optimizer's sensitivity, not the sharding. The run's own updates still run, and their losses are compared.
    """
    loss_fn = objective_loss(OBJECTIVE)
    step_fn = state.make_step(loss_fn)

    def grads_fn(frozen, lora, batch):
        with sharding_lib.activation_sharding(state.mesh):
            loss, _, grads, means = loss_grads_and_metrics(state.graphdef, frozen, lora, batch, microbatches=2,
                                                           chunk_size=24, loss_fn=loss_fn)
        return loss, means, grads

    grads_fn = jax.jit(grads_fn)
    out = []
    for step, host_batch in enumerate(batches):
        batch = state.put_batch(host_batch, keys=RL_BATCH_KEYS, rows=ROWS)
        # Only the reference run's adapters are read back: the mesh runs take theirs from `weights`.
        own = jax.device_get(state.adapters["assistant"]) if weights is None else None
        at = state.adapters["assistant"] if weights is None else jax.device_put(weights[step], state.lora_shardings)
        loss, means, grads = jax.device_get(grads_fn(state.frozen, at, batch))
        metrics = state.update("assistant", step_fn, batch, step)
        step_loss = float(metrics["loss"])
        assert bool(metrics["finite"])
        if weights is None:  # the step's loss is the one grads_fn gives at the same adapters
            assert abs(step_loss - float(loss)) <= 1e-5 * abs(float(loss))
        out.append((float(loss), {k: float(v) for k, v in means.items()}, grads, step_loss, own))
    return out


def compare(result, reference) -> dict:
    diff = {"loss": 0.0, "step_loss": 0.0, "grads": 0.0}
    for ours, theirs in zip(result, reference):
        (loss, means, grads, step_loss, _), (ref_loss, ref_means, ref_grads, ref_step_loss, _) = ours, theirs
        diff["loss"] = max(diff["loss"], abs(loss - ref_loss) / abs(ref_loss))
        diff["step_loss"] = max(diff["step_loss"], abs(step_loss - ref_step_loss) / abs(ref_step_loss))
        for key, value in means.items():
            diff[key] = max(diff.get(key, 0.0), abs(value - ref_means[key]) / max(abs(ref_means[key]), 1e-12))
        diff["grads"] = max([diff["grads"]] + [relative_difference(a, b) for a, b in
                                               zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads))])
    return diff


def main():
    assert jax.device_count() == 8, f"expected 8 simulated devices, found {jax.device_count()}"
    one_device = sharding_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    out = {"meshes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        state = RunState(parse_run(config_for(tmp, (1, 1, 1))), mesh=one_device)
        batches = make_batches(state)
        reference = run(state, batches)
        out["clip_frac"] = [r[1]["clip_frac"] for r in reference]
        out["kl"] = [r[1]["kl"] for r in reference]
        weights = [r[4] for r in reference]
        for mesh in MESHES:
            state = RunState(parse_run(config_for(tmp, mesh)))
            out["meshes"][str(mesh)] = compare(run(state, batches, weights), reference)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
