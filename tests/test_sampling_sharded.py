"""Tensor-parallel decoding on 8 simulated CPU devices gives the unsharded tokens.

XLA fixes its device count when jax is first imported, so the check runs in a
child process started with XLA_FLAGS; the rest of the suite keeps one device.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_greedy_decoding_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "tests.test_sampling_sharded"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert "sharded decoding ok" in proc.stdout


def _child() -> None:
    import jax
    import numpy as np
    from flax import nnx

    from cmat_jax.models.config import preset
    from cmat_jax.models.transformer import Transformer
    from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy
    from cmat_jax.sharding import make_mesh, state_shardings

    assert jax.device_count() == 8, jax.devices()

    def make_model():
        model = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        return nnx.merge(graphdef, jax.tree.map(lambda x: x * 6.0 if x.ndim > 1 else x, state))

    rng = np.random.RandomState(0)
    prompts = [rng.randint(0, 1024, n).tolist() for n in (3, 21, 9, 14)]
    letters = lambda ids: "".join(chr(ord("a") + t % 26) for t in ids)  # noqa: E731

    base = make_model()
    reference = Sampler(base).generate(base, prompts, SamplingPolicy(12, temperature=0.0), eos_ids=())
    stop = letters(reference.token_ids[1])[6:8]
    reference_stop = Sampler(base).generate(base, prompts, SamplingPolicy(12, temperature=0.0, stop_strings=[stop]),
                                            eos_ids=(), tokenizer=letters)
    for sizes in ((1, 1, 8), (2, 1, 4)):
        mesh = make_mesh(*sizes)
        model = make_model()
        # Place the weights once, as training would; the sampler then reuses them.
        state = nnx.state(model)
        nnx.update(model, jax.device_put(state, state_shardings(state, mesh)))
        kernel = model.blocks.mlp.up.kernel[...]
        assert "tensor" in str(kernel.sharding.spec), kernel.sharding

        sampler = Sampler(model, SamplerConfig(stop_check_interval=4), mesh=mesh)
        result = sampler.generate(model, prompts, SamplingPolicy(12, temperature=0.0), eos_ids=())
        assert result.token_ids == reference.token_ids, (sizes, result.token_ids, reference.token_ids)
        for ours, ref in zip(result.logprobs, reference.logprobs):
            np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        stopped = sampler.generate(model, prompts, SamplingPolicy(12, temperature=0.0, stop_strings=[stop]), eos_ids=(),
                                   tokenizer=letters)
        assert stopped.token_ids == reference_stop.token_ids and stopped.texts == reference_stop.texts
        assert stopped.finish_reasons[1] == "stop"
        compiled = sampler.num_compiles
        sampler.generate(model, prompts, SamplingPolicy(12, temperature=0.0), eos_ids=())
        assert sampler.num_compiles == compiled, sampler.trace_counts
    print("sharded decoding ok")


if __name__ == "__main__":
    _child()
