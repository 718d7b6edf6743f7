"""The sampler against transformers' generate, full forward passes, and its own contracts."""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoTokenizer

import cmat_jax

from cmat_jax.checkpoints.hf import load_hf_model
from cmat_jax.models.config import preset
from cmat_jax.models.lora import LoRA, LoRAConfig, merge_lora
from cmat_jax.models.transformer import Transformer
from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy, greedy_generate, policy_log_probs
from cmat_jax.sampling.programs import GPU_DECODE_XLA_OPTIONS
from tests import tiny_hf

ATOL = 1e-4  # float32 log-probabilities; fixed, never loosened
# Short and long prompts in one batch; 17 and 30 cross the smallest prompt bucket (16).
PROMPT_LENGTHS = (3, 17, 9, 30)
NEW_TOKENS = 12
HF_VARIANTS = ("qwen2_tied_gqa", "llama_gqa_linear_rope")


def make_prompts(vocab, lengths=PROMPT_LENGTHS, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, vocab, n).tolist() for n in lengths]


def hf_greedy(hf_model, prompts, max_new_tokens, eos_id=None):
    """transformers greedy decoding of a left-padded batch; rows cut after their EOS."""
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    hf_model.generation_config.eos_token_id = eos_id
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                min_new_tokens=0, pad_token_id=0, eos_token_id=eos_id)
    rows = []
    for r in range(len(prompts)):
        row = out[r, width:].tolist()
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        rows.append(row)
    return rows


@pytest.fixture(scope="module", params=HF_VARIANTS)
def hf_pair(request, tmp_path_factory):
    """(transformers model, its saved directory)."""
    hf_model = tiny_hf.make_hf_model(request.param)
    out = str(tmp_path_factory.mktemp(request.param))
    tiny_hf.save_hf(hf_model, out)
    return hf_model, out


@pytest.fixture(scope="module")
def hf_sampler(hf_pair):
    """(transformers model, a Sampler, the same weights loaded into JAX)."""
    hf_model, path = hf_pair
    model = load_hf_model(path, attention_impl="xla")
    return hf_model, Sampler(model), model


@pytest.fixture(scope="module")
def tiny_model():
    model = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(0))
    # Larger weights than the default init, so logits are far from uniform.
    graphdef, state = nnx.split(model)
    keys = iter(jax.random.split(jax.random.key(7), 64))
    state = jax.tree.map(lambda x: x * 6.0 if x.ndim > 1 else x + 0.1 * jax.random.normal(next(keys), x.shape),
                         state)
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def tiny_sampler(tiny_model):
    """One default Sampler shared by tests, so programs of equal shape compile once."""
    return Sampler(tiny_model)


# -- parity with transformers ------------------------------------------------


def test_greedy_matches_transformers(hf_sampler):
    hf_model, sampler, model = hf_sampler
    prompts = make_prompts(hf_model.config.vocab_size)
    ours = sampler.generate(model, prompts, SamplingPolicy(NEW_TOKENS, temperature=0.0), eos_ids=())
    assert ours.token_ids == hf_greedy(hf_model, prompts, NEW_TOKENS)
    assert ours.finish_reasons == ["length"] * len(prompts)
    assert all(len(set(row)) > 2 for row in ours.token_ids), "degenerate reference: too few distinct tokens"


def test_unrolled_decode_layers_match_transformers(hf_pair):
    hf_model, path = hf_pair
    model = load_hf_model(path, attention_impl="xla")
    sampler = Sampler(model, SamplerConfig(unroll_decode_layers=True))
    prompts = make_prompts(hf_model.config.vocab_size, seed=3)
    ours = sampler.generate(model, prompts, SamplingPolicy(NEW_TOKENS, temperature=0.0), eos_ids=())
    assert ours.token_ids == hf_greedy(hf_model, prompts, NEW_TOKENS)


def test_gpu_decode_xla_options_match_transformers(hf_pair):
    """The GPU decode options are valid compile options here and change no token."""
    hf_model, path = hf_pair
    config = SamplerConfig(decode_xla_options=GPU_DECODE_XLA_OPTIONS)
    model = load_hf_model(path, attention_impl="xla")
    sampler = Sampler(model, config)
    assert sampler.decode_xla_options == GPU_DECODE_XLA_OPTIONS
    prompts = make_prompts(hf_model.config.vocab_size, seed=4)
    ours = sampler.generate(model, prompts, SamplingPolicy(NEW_TOKENS, temperature=0.0), eos_ids=())
    assert ours.token_ids == hf_greedy(hf_model, prompts, NEW_TOKENS)


def test_every_eos_id_of_the_checkpoint_ends_a_row(tiny_model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    free = Sampler(tiny_model).generate(tiny_model, prompts, SamplingPolicy(12, temperature=0.0), eos_ids=()).token_ids
    eos = (free[0][3], free[1][5])  # two ids that end rows 0 and 1 mid-way
    model = Transformer(preset("tiny").replace(eos_token_id=eos), attention_impl="xla", rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(tiny_model))
    # eos_ids=None: the checkpoint's ids
    default = Sampler(model).generate(model, prompts, SamplingPolicy(12, temperature=0.0))
    for row, ids in zip(free, default.token_ids):
        stops = [i for i, t in enumerate(row) if t in eos]
        assert ids == (row[:stops[0] + 1] if stops else row)
    assert default.finish_reasons[:2] == ["eos", "eos"]


def test_decode_xla_options_default_per_platform(tiny_model):
    on_gpu = jax.default_backend() == "gpu"
    assert Sampler(tiny_model).decode_xla_options == (GPU_DECODE_XLA_OPTIONS if on_gpu else None)
    assert Sampler(tiny_model, SamplerConfig(decode_xla_options={})).decode_xla_options is None


def test_greedy_eos_matches_transformers(hf_sampler):
    hf_model, sampler, model = hf_sampler
    prompts = make_prompts(hf_model.config.vocab_size)
    free = sampler.generate(model, prompts, SamplingPolicy(NEW_TOKENS, temperature=0.0), eos_ids=())
    eos = free.token_ids[1][4]  # a token that ends row 1 mid-way (and maybe others)
    result = sampler.generate(model, prompts, SamplingPolicy(NEW_TOKENS, temperature=0.0), eos_ids=[eos])
    assert result.token_ids == hf_greedy(hf_model, prompts, NEW_TOKENS, eos_id=eos)
    assert result.finish_reasons[1] == "eos" and result.token_ids[1][-1] == eos
    for ids, reason in zip(result.token_ids, result.finish_reasons):
        assert reason == ("eos" if eos in ids else "length")
    assert sampler.trace_counts == {"prefill": 1, "decode": 1}  # a new EOS list is no new program


def _randomize_adapters(model, seed=3):
    graphdef, adapters, rest = nnx.split(model, LoRA, ...)
    leaves, treedef = jax.tree.flatten(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


def _hf_with_merged_adapters(hf_model, model):
    """A copy of the transformers model whose weights include the JAX model's adapters."""
    merged = copy.deepcopy(hf_model)
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    params = dict(merged.named_parameters())
    blocks = model.blocks
    with torch.no_grad():
        for short, hf_name in names.items():
            parent = blocks.attn if short in "qkvo" else blocks.mlp
            linear = getattr(parent, short)
            delta_lio = np.einsum("lir,lro->lio", np.asarray(linear.lora_a[...]), np.asarray(linear.lora_b[...]))
            delta_lio *= linear.lora_scale
            for layer in range(delta_lio.shape[0]):
                params[f"model.layers.{layer}.{hf_name}.weight"] += torch.from_numpy(delta_lio[layer].T.copy())
    return merged


def test_greedy_with_lora_matches_transformers_with_merged_weights(hf_pair):
    hf_model, path = hf_pair
    model = _randomize_adapters(load_hf_model(path, lora=LoRAConfig(rank=4, alpha=8.0), attention_impl="xla"))
    prompts = make_prompts(hf_model.config.vocab_size, seed=1)
    reference = hf_greedy(_hf_with_merged_adapters(hf_model, model), prompts, NEW_TOKENS)
    base = hf_greedy(hf_model, prompts, NEW_TOKENS)
    assert reference != base, "the adapters should change the generation"

    assert greedy_generate(model, prompts, NEW_TOKENS) == reference
    assert greedy_generate(model, prompts, NEW_TOKENS, use_lora=False) == base
    merge_lora(model)
    assert greedy_generate(model, prompts, NEW_TOKENS) == reference


# -- log-probabilities -------------------------------------------------------


@jax.jit
def _forward_logits(graphdef_state, seq_bt):
    return nnx.merge(*graphdef_state)(seq_bt)[0]


def full_forward_log_probs(model, prompts, generated, params: SamplingPolicy):
    """Policy log-probabilities of each row's generated ids from one uncached forward pass
    over right-padded prompt + generation sequences (padding after a row changes nothing before it)."""
    seqs = [p + g for p, g in zip(prompts, generated)]
    seq_bt = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
    for r, seq in enumerate(seqs):
        seq_bt[r, : len(seq)] = seq
    logits_btv = _forward_logits(nnx.split(model), seq_bt)
    out = []
    for r, (p, g) in enumerate(zip(prompts, generated)):
        log_probs_tv = policy_log_probs(logits_btv[r, len(p) - 1: len(p) + len(g) - 1], params.values())
        out.append(np.asarray(jnp.take_along_axis(log_probs_tv, jnp.asarray(g)[:, None], axis=-1)[:, 0]))
    return out


@pytest.mark.parametrize("params", [
    SamplingPolicy(10, temperature=0.0),
    SamplingPolicy(10, temperature=1.0),
    SamplingPolicy(10, temperature=0.7, top_k=20, top_p=0.9),
], ids=["greedy", "plain", "top_k_top_p"])
def test_logprobs_equal_full_forward(tiny_model, tiny_sampler, params):
    prompts = make_prompts(1024, seed=2)
    result = tiny_sampler.generate(tiny_model, prompts, params, key=jax.random.key(0), eos_ids=())
    expected = full_forward_log_probs(tiny_model, prompts, result.token_ids, params)
    for lps, want in zip(result.logprobs, expected):
        np.testing.assert_allclose(lps, want, atol=ATOL, rtol=0)
        assert np.all(np.isfinite(lps)) and np.all(lps <= 0)
    if params.top_k:  # the policy's support is cut: some draws have probability well above the plain softmax's
        plain = full_forward_log_probs(tiny_model, prompts, result.token_ids, SamplingPolicy(temperature=1.0))
        assert np.max(np.concatenate(result.logprobs) - np.concatenate(plain)) > 0.01


def test_top_k_then_top_p_keep_the_documented_support():
    logits_bv = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))

    def kept(top_k, top_p):
        params = SamplingPolicy(temperature=1.0, top_k=top_k, top_p=top_p)
        return np.isfinite(np.asarray(policy_log_probs(logits_bv, params.values())))[0].tolist()

    assert kept(None, 0.4) == [True, False, False, False]
    assert kept(None, 0.7) == [True, True, False, False]
    assert kept(None, 0.9) == [True, True, True, False]
    assert kept(3, None) == [True, True, True, False]
    # top-p applies to the top-k distribution renormalised: 0.5/0.8 = 0.625 already reaches 0.6.
    assert kept(None, 0.6) == [True, True, False, False]
    assert kept(2, 0.6) == [True, False, False, False]
    params = SamplingPolicy(temperature=1.0, top_k=2, top_p=None)
    log_probs = policy_log_probs(logits_bv, params.values())
    np.testing.assert_allclose(np.exp(log_probs[0, :2]), [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)


# -- keys, greedy limits ------------------------------------------------------


def test_fixed_key_reproduces_and_other_keys_differ(tiny_model, tiny_sampler):
    sampler = tiny_sampler
    prompts = make_prompts(1024, seed=3)
    run = lambda seed: sampler.generate(tiny_model, prompts, SamplingPolicy(10), key=jax.random.key(seed),  # noqa: E731
                                        eos_ids=())
    first, again, other = run(0), run(0), run(1)
    assert first.token_ids == again.token_ids
    np.testing.assert_array_equal(np.concatenate(first.logprobs), np.concatenate(again.logprobs))
    assert first.token_ids != other.token_ids
    legacy = sampler.generate(tiny_model, prompts, SamplingPolicy(10), key=jax.random.PRNGKey(0), eos_ids=())
    assert legacy.token_ids == first.token_ids


def test_top_k_one_and_vanishing_temperature_equal_greedy(tiny_model, tiny_sampler):
    sampler = tiny_sampler
    prompts = make_prompts(1024, seed=4)
    greedy = sampler.generate(tiny_model, prompts, SamplingPolicy(10, temperature=0.0), eos_ids=())
    top1 = sampler.generate(tiny_model, prompts, SamplingPolicy(10, top_k=1), key=jax.random.key(5), eos_ids=())
    cold = sampler.generate(tiny_model, prompts, SamplingPolicy(10, temperature=1e-4), key=jax.random.key(5),
                            eos_ids=())
    hot = sampler.generate(tiny_model, prompts, SamplingPolicy(10, temperature=1.0), key=jax.random.key(5), eos_ids=())
    assert top1.token_ids == greedy.token_ids
    assert cold.token_ids == greedy.token_ids
    assert hot.token_ids != greedy.token_ids
    np.testing.assert_array_equal(np.concatenate(top1.logprobs), 0.0)


# -- compilation ---------------------------------------------------------------


def test_many_varied_calls_compile_a_bounded_number_of_programs(tiny_model):
    config = SamplerConfig(batch_buckets=(8,), prompt_buckets=(32, 64), new_token_buckets=(16,))
    sampler = Sampler(tiny_model, config)
    rng = np.random.RandomState(0)
    calls = []
    for _ in range(10):
        lengths = rng.randint(1, 60, rng.randint(1, 9))
        calls.append((make_prompts(1024, lengths, seed=rng.randint(1000)), int(rng.randint(1, 17)),
                      float(rng.choice([0.5, 1.0])), int(rng.choice([5, 50]))))

    def run_all():
        for prompts, new, temperature, top_k in calls:
            sampler.generate(tiny_model, prompts, SamplingPolicy(new, temperature=temperature, top_k=top_k),
                             key=jax.random.key(0), eos_ids=[int(rng.randint(1024))])

    run_all()
    # One batch bucket, one new-token bucket, one policy shape: a prefill and a
    # decode program per prompt bucket used.
    prompt_buckets = {32 if max(map(len, prompts)) <= 32 else 64 for prompts, *_ in calls}
    assert len(prompt_buckets) == 2
    assert sampler.trace_counts == {"prefill": 2, "decode": 2}, sampler.trace_counts
    compiled = sampler.num_compiles
    run_all()
    assert sampler.num_compiles == compiled
    sampler.generate(tiny_model, calls[0][0], SamplingPolicy(3, temperature=0.0))  # greedy is another program shape
    assert sampler.num_compiles > compiled


def test_batches_larger_than_max_batch_run_in_passes(tiny_model, tiny_sampler):
    prompts = make_prompts(1024, lengths=(5, 9, 2, 14, 7, 3), seed=5)
    whole = tiny_sampler.generate(tiny_model, prompts, SamplingPolicy(6, temperature=0.0), eos_ids=())
    passes = Sampler(tiny_model, SamplerConfig(max_batch=2))
    split = passes.generate(tiny_model, prompts, SamplingPolicy(6, temperature=0.0), eos_ids=())
    assert split.token_ids == whole.token_ids
    assert passes.trace_counts["prefill"] == 1  # three passes of 2 rows: one program


# -- stop strings --------------------------------------------------------------


def letters(ids):
    """A toy detokenizer: one letter per token."""
    return "".join(chr(ord("a") + t % 26) for t in ids)


def first_stop(ids, stop):
    """Reference: (tokens kept, text) for the shortest prefix whose text holds `stop`."""
    for n in range(1, len(ids) + 1):
        text = letters(ids[:n])
        if stop in text:
            return ids[:n], text[: text.index(stop)]
    return None


def test_stop_strings_trim_ids_and_text_exactly(tiny_model, tiny_sampler):
    prompts = make_prompts(1024, lengths=(4, 11, 6), seed=6)
    free = tiny_sampler.generate(tiny_model, prompts, SamplingPolicy(24, temperature=0.0), eos_ids=(),
                                 tokenizer=letters)
    assert free.texts == [letters(ids) for ids in free.token_ids]
    stop = free.texts[1][5:7]  # spans tokens 5-6 of row 1 (or ends earlier if the pair repeats)
    sampler = Sampler(tiny_model, SamplerConfig(stop_check_interval=4))
    result = sampler.generate(tiny_model, prompts, SamplingPolicy(24, temperature=0.0, stop_strings=["@@", stop]),
                              eos_ids=(), tokenizer=letters)
    for r, ids in enumerate(free.token_ids):
        expected = first_stop(ids, stop)
        if expected is None:
            assert (result.token_ids[r], result.finish_reasons[r], result.texts[r]) == (ids, "length", free.texts[r])
            assert result.stop_strings[r] is None
        else:
            assert result.token_ids[r] == expected[0]
            assert result.texts[r] == expected[1]
            assert result.finish_reasons[r] == "stop" and result.stop_strings[r] == stop
            np.testing.assert_array_equal(result.logprobs[r], free.logprobs[r][: len(expected[0])])
    assert result.finish_reasons[1] == "stop" and len(result.token_ids[1]) <= 7


def test_eos_text_leaves_out_the_eos_token_and_stop_needs_a_tokenizer(tiny_model, tiny_sampler):
    prompts = make_prompts(1024, lengths=(4, 8), seed=7)
    free = tiny_sampler.generate(tiny_model, prompts, SamplingPolicy(8, temperature=0.0), eos_ids=())
    eos = free.token_ids[0][3]
    result = tiny_sampler.generate(tiny_model, prompts, SamplingPolicy(8, temperature=0.0, stop_strings=["zzzzzzzz"]),
                                   eos_ids=[eos], tokenizer=letters)
    cut = free.token_ids[0].index(eos) + 1
    assert result.token_ids[0] == free.token_ids[0][:cut] and result.finish_reasons[0] == "eos"
    assert result.texts[0] == letters(free.token_ids[0][: cut - 1])
    with pytest.raises(ValueError, match="need a tokenizer"):
        tiny_sampler.generate(tiny_model, prompts, SamplingPolicy(8, temperature=0.0, stop_strings=["x"]))


def test_stop_strings_with_a_transformers_tokenizer(tiny_model, tiny_sampler):
    tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(cmat_jax.__file__), "assets", "tokenizer"))
    prompt = tok.encode("SELECT name FROM users WHERE")
    free = tiny_sampler.generate(tiny_model, [prompt], SamplingPolicy(16, temperature=0.0), eos_ids=(), tokenizer=tok)
    text = free.texts[0]
    assert text == tok.decode(free.token_ids[0])
    stop = text[len(text) // 2: len(text) // 2 + 2]
    result = tiny_sampler.generate(tiny_model, [prompt], SamplingPolicy(16, temperature=0.0, stop_strings=[stop]),
                                   eos_ids=(), tokenizer=tok)
    assert result.finish_reasons == ["stop"]
    assert result.texts[0] == text[: text.index(stop)]
    assert stop in tok.decode(result.token_ids[0]) and stop not in tok.decode(result.token_ids[0][:-1])


# -- errors before any compute ---------------------------------------------------


def test_requests_that_do_not_fit_fail_before_compiling(tiny_model):
    sampler = Sampler(tiny_model, SamplerConfig(max_len=64))
    with pytest.raises(ValueError, match=r"prompt 1 has 60 tokens; with max_new_tokens=10 it needs 70 positions"):
        sampler.generate(tiny_model, [[1, 2], [3] * 60], SamplingPolicy(10, temperature=0.0))
    default = Sampler(tiny_model)  # the tiny preset's context is 2048 positions
    with pytest.raises(ValueError, match="allows 2048"):
        default.generate(tiny_model, [[1] * 2000], SamplingPolicy(100, temperature=0.0))
    with pytest.raises(ValueError, match="largest configured bucket 32"):
        Sampler(tiny_model, SamplerConfig(prompt_buckets=(16, 32))).generate(tiny_model, [[1] * 40],
                                                                             SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        sampler.generate(tiny_model, [[]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        sampler.generate(tiny_model, [[5, 1024]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="needs key="):
        sampler.generate(tiny_model, [[5]], SamplingPolicy(4, temperature=0.8))
    with pytest.raises(ValueError, match="temperature must be"):
        sampler.generate(tiny_model, [[5]], SamplingPolicy(4, temperature=-1.0), key=jax.random.key(0))
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        sampler.generate(tiny_model, [[5]], SamplingPolicy(0, temperature=0.0))
    with pytest.raises(TypeError, match="wrap it in a list"):
        sampler.generate(tiny_model, [[5]], SamplingPolicy(4, temperature=0.0, stop_strings="```"), tokenizer=letters)
    with pytest.raises(ValueError, match="one key per call"):
        sampler.generate(tiny_model, [[5]], SamplingPolicy(4), key=jax.random.split(jax.random.key(0), 2))
    assert sampler.num_compiles == default.num_compiles == 0
    with pytest.raises(ValueError, match="exceeds the model's context of 2048"):
        Sampler(tiny_model, SamplerConfig(max_len=4096))


def test_cache_fits_a_hard_context_limit():
    """Buckets that would overrun a checkpoint's hard context shrink to fit it exactly."""
    limited = Transformer(preset("tiny").replace(context_limit=48), attention_impl="xla", rngs=nnx.Rngs(0))
    free = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(0))
    prompts = make_prompts(1024, lengths=(20, 5), seed=8)
    # Buckets 32 + 32 would need 64 slots; the limit allows 48.
    assert greedy_generate(limited, prompts, 20) == greedy_generate(free, prompts, 20)
    with pytest.raises(ValueError, match="allows 48"):
        greedy_generate(limited, prompts, 29)
