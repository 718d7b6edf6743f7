"""Persistent slots on meshes of 8 simulated CPU devices give the unsharded re-prefill's tokens.

XLA fixes its device count when jax is first imported, so the check runs in a child process started with
XLA_FLAGS; the rest of the suite keeps one device.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_slots_equal_unsharded_reprefill():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "tests.test_sampling_slots_sharded"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert "sharded slots ok" in proc.stdout


def _child() -> None:
    import jax
    import numpy as np
    from flax import nnx

    from cmat_jax.models.config import preset
    from cmat_jax.models.transformer import Transformer
    from cmat_jax.sampling import Sampler, SamplingPolicy
    from cmat_jax.sampling.slots import SlotSampler
    from cmat_jax.sharding import make_mesh, state_shardings

    assert jax.device_count() == 8, jax.devices()
    model = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x * 6.0 if x.ndim > 1 else x, state))
    rng = np.random.RandomState(0)
    openings = [rng.randint(0, 1024, n).tolist() for n in (21, 9, 14)]

    def turns(generate):
        """Three turns of 4 conversations (two share an opening); the replies of each turn."""
        prompts = [openings[0], openings[0], openings[1], openings[2]]
        replies = []
        for turn in range(3):
            result = generate(prompts)
            replies.append((result.token_ids, result.logprobs))
            prompts = [p + r + [7 + turn, 8] for p, r in zip(prompts, result.token_ids)]
        return replies

    reference = Sampler(model)
    expected = turns(lambda prompts: reference.generate(model, prompts, SamplingPolicy(8, temperature=0.0), eos_ids=()))
    for sizes in ((1, 1, 8), (2, 1, 4)):
        mesh = make_mesh(*sizes)
        placed = nnx.merge(graphdef, jax.device_put(nnx.state(model), state_shardings(nnx.state(model), mesh)))
        slots = SlotSampler(Sampler(placed, mesh=mesh))
        got = turns(lambda prompts: slots.generate(placed, range(4), prompts, SamplingPolicy(8, temperature=0.0),
                                                   eos_ids=()))
        for (ids, logprobs), (ref_ids, ref_logprobs) in zip(got, expected):
            assert ids == ref_ids, (sizes, ids, ref_ids)
            for ours, ref in zip(logprobs, ref_logprobs):
                np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        assert slots.stats.shared_tokens == 21 and slots.stats.reused_tokens > 0
    print("sharded slots ok")


if __name__ == "__main__":
    _child()
