"""Logit parity with transformers, round trips and exports, on tiny random models."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from cmat_jax.checkpoints.hf import load_hf_model, save_hf_model
from cmat_jax.checkpoints.safetensors_io import SafetensorsDir
from tests import tiny_hf

ATOL = 1e-4  # on float32 logits; fixed, never loosened


def jax_logits(model, tokens, mask, positions):
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    return np.asarray(logits)


def assert_logits_match(ours, ref, mask):
    valid = mask.astype(bool)  # padding positions carry no meaning in either implementation
    diff = np.abs(ours - ref)[valid].max()
    assert diff <= ATOL, f"max abs logit difference {diff:.3g} > {ATOL}"


@pytest.fixture(scope="module", params=sorted(tiny_hf.VARIANTS))
def hf_dir(request, tmp_path_factory):
    model = tiny_hf.make_hf_model(request.param)
    out = str(tmp_path_factory.mktemp(request.param))
    tiny_hf.save_hf(model, out)
    return model, out


def test_logits_match_transformers(hf_dir):
    model, path = hf_dir
    tokens, mask, positions = tiny_hf.token_batch(model.config.vocab_size)
    ours = jax_logits(load_hf_model(path, attention_impl="xla"), tokens, mask, positions)
    assert_logits_match(ours, tiny_hf.hf_logits(model, tokens, mask), mask)


def test_round_trip_is_bit_identical(hf_dir, tmp_path):
    _, path = hf_dir
    save_hf_model(load_hf_model(path), str(tmp_path))
    before, after = SafetensorsDir(path), SafetensorsDir(str(tmp_path))
    assert sorted(before.names) == sorted(after.names)
    for name in before.names:
        np.testing.assert_array_equal(before.read(name), after.read(name), err_msg=name)


def test_export_loads_in_transformers_with_same_logits(hf_dir, tmp_path):
    model, path = hf_dir
    save_hf_model(load_hf_model(path), str(tmp_path), source_dir=path)
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokens, mask, _ = tiny_hf.token_batch(model.config.vocab_size, seed=1)
    assert_logits_match(tiny_hf.hf_logits(reloaded.eval(), tokens, mask), tiny_hf.hf_logits(model, tokens, mask), mask)


def test_old_style_rope_config(hf_dir, tmp_path):
    """Published checkpoints carry rope_theta/rope_scaling rather than rope_parameters."""
    model, path = hf_dir
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    params = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = params.get("rope_theta", config.get("rope_theta"))
    if params.get("rope_type", "default") != "default":
        config["rope_scaling"] = {"type": params["rope_type"], "factor": params["factor"]}
    os.symlink(os.path.join(path, "model.safetensors"), tmp_path / "model.safetensors")
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    tokens, mask, positions = tiny_hf.token_batch(model.config.vocab_size)
    ours = jax_logits(load_hf_model(str(tmp_path), attention_impl="xla"), tokens, mask, positions)
    assert_logits_match(ours, tiny_hf.hf_logits(model, tokens, mask), mask)


@pytest.fixture(scope="module")
def original_qwen(tmp_path_factory):
    qwen2 = tiny_hf.make_mha_qwen2()
    return qwen2, tiny_hf.write_original_qwen(qwen2, str(tmp_path_factory.mktemp("qwen_original")))


def test_original_qwen_layout_matches_its_qwen2_twin(original_qwen):
    qwen2, path = original_qwen
    model = load_hf_model(path, attention_impl="xla")
    assert model.cfg.family == "qwen" and model.cfg.intermediate_size == qwen2.config.intermediate_size
    tokens, mask, positions = tiny_hf.token_batch(qwen2.config.vocab_size)
    assert_logits_match(jax_logits(model, tokens, mask, positions), tiny_hf.hf_logits(qwen2, tokens, mask), mask)


def test_original_qwen_exports_as_qwen2(original_qwen, tmp_path):
    qwen2, path = original_qwen
    save_hf_model(load_hf_model(path), str(tmp_path))
    exported = SafetensorsDir(str(tmp_path))
    for name, tensor in qwen2.state_dict().items():
        np.testing.assert_array_equal(exported.read(name), tensor.numpy(), err_msg=name)


def test_original_qwen_refuses_inputs_past_its_context(original_qwen):
    _, path = original_qwen
    model = load_hf_model(path)
    tokens = jnp.zeros((1, model.cfg.context_limit + 1), jnp.int32)
    with pytest.raises(ValueError, match="trained context"):
        model(tokens)


def test_bf16_load_keeps_checkpoint_bits(tmp_path):
    model = tiny_hf.make_hf_model("qwen2_tied_gqa").to(dtype=__import__("torch").bfloat16)
    src, dst = tmp_path / "src", tmp_path / "dst"
    tiny_hf.save_hf(model, str(src))
    save_hf_model(load_hf_model(str(src), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16), str(dst))
    before, after = SafetensorsDir(str(src)), SafetensorsDir(str(dst))
    for name in before.names:
        assert after.read(name).dtype == before.read(name).dtype
        np.testing.assert_array_equal(before.read(name).view(np.uint16), after.read(name).view(np.uint16))
    with open(dst / "config.json") as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"


def test_sharded_export_with_index(hf_dir, tmp_path):
    model, path = hf_dir
    save_hf_model(load_hf_model(path), str(tmp_path), max_shard_bytes=200_000)
    with open(tmp_path / "model.safetensors.index.json") as f:
        index = json.load(f)
    assert len(set(index["weight_map"].values())) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    tokens, mask, _ = tiny_hf.token_batch(model.config.vocab_size, seed=2)
    np.testing.assert_array_equal(tiny_hf.hf_logits(reloaded, tokens, mask), tiny_hf.hf_logits(model, tokens, mask))
