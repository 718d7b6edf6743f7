"""Bad checkpoints and configs fail with one clear message naming the file and the problem."""

import json
import os
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cmat_jax.checkpoints.hf import load_hf_model
from cmat_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsDir, write_sharded
from cmat_jax.models.config import ConfigError, from_hf_config, preset, to_hf_config
from tests import tiny_hf


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return tiny_hf.save_hf(tiny_hf.make_hf_model("qwen2_tied_gqa"), str(tmp_path_factory.mktemp("good")))


@pytest.fixture
def copy(good_dir, tmp_path):
    shutil.copytree(good_dir, tmp_path, dirs_exist_ok=True)
    return tmp_path


def edit_tensors(path, change):
    tensors = load_file(str(path / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_no_config_json(copy):
    os.remove(copy / "config.json")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        load_hf_model(str(copy))


def test_unsupported_model_type(copy):
    config = json.loads((copy / "config.json").read_text())
    config["model_type"] = "gpt2"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config\.json has model_type 'gpt2'; supported: qwen2, llama, qwen"):
        load_hf_model(str(copy))


def test_missing_tensor(copy):
    edit_tensors(copy, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.self_attn\.k_proj\.bias' is missing"):
        load_hf_model(str(copy))


def test_mis_shaped_tensor(copy):
    def shrink(tensors):
        tensors["model.layers.0.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"][:-1]

    edit_tensors(copy, shrink)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.up_proj\.weight' "
                                              r"has shape \(95, 64\)"):
        load_hf_model(str(copy))


def test_truncated_safetensors(copy):
    path = copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is truncated"):
        load_hf_model(str(copy))


@pytest.mark.parametrize("header, message", [
    ([1, 2], "its header is a list"),
    ({"w": {"dtype": "F32", "shape": [1]}}, "tensor 'w' needs dtype, shape and data_offsets"),
])
def test_malformed_safetensors_header(copy, header, message):
    blob = json.dumps(header).encode()
    (copy / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(CheckpointError, match=message):
        load_hf_model(str(copy))


def test_a_new_export_replaces_the_weights_of_an_earlier_one(tmp_path):
    ones, twos = np.ones((4, 4), np.float32), np.full((4, 4), 2.0, np.float32)
    write_sharded(str(tmp_path), [("a", ones), ("b", ones)], max_shard_bytes=64)  # two shards + index
    assert write_sharded(str(tmp_path), [("a", twos), ("b", twos)], max_shard_bytes=1 << 20) == ["model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    np.testing.assert_array_equal(SafetensorsDir(str(tmp_path)).read("a"), twos)
    write_sharded(str(tmp_path), [("a", ones), ("b", ones)], max_shard_bytes=64)  # and back to shards
    assert "model.safetensors" not in os.listdir(tmp_path)
    np.testing.assert_array_equal(SafetensorsDir(str(tmp_path)).read("b"), ones)


def test_unexpected_tensors_mean_config_and_weights_disagree(copy):
    config = json.loads((copy / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensors that config\.json's model does not use \(model\.layers\.1\."):
        load_hf_model(str(copy))


def test_no_weights_at_all(copy):
    os.remove(copy / "model.safetensors")
    with pytest.raises(CheckpointError, match="has neither model.safetensors nor model.safetensors.index.json"):
        load_hf_model(str(copy))


QWEN2 = {"model_type": "qwen2", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope scaling type 'yarn' is not supported"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "'dynamic' is not supported"),
    ({"use_sliding_window": True}, "use_sliding_window=true is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"num_key_value_heads": 3}, r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)"),
    ({"num_attention_heads": 0}, r"num_heads must be a positive integer, found 0"),
    ({"intermediate_size": -1}, r"intermediate_size must be a positive integer, found -1"),
])
def test_unsupported_math_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        from_hf_config({**QWEN2, **change})


def test_missing_config_field_is_named():
    config = dict(QWEN2)
    del config["hidden_size"]
    with pytest.raises(ConfigError, match="lacks the field 'hidden_size'"):
        from_hf_config(config)


def test_every_eos_id_of_a_list_is_kept_and_exported():
    config = from_hf_config({**QWEN2, "eos_token_id": [151645, 151643]})
    assert config.eos_token_id == (151645, 151643)
    assert to_hf_config(config)["eos_token_id"] == [151645, 151643]
    assert from_hf_config({**QWEN2, "eos_token_id": [7]}).eos_token_id == 7


def test_both_rope_config_forms_agree():
    old = from_hf_config({**QWEN2, "rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 4.0}})
    new = from_hf_config({**QWEN2, "rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0}})
    assert old == new and old.rope_theta == 1e6 and old.rope_scaling_factor == 4.0


def test_presets_match_published_shapes():
    assert preset("qwen2.5-1.5b").tie_word_embeddings and preset("qwen2_5_7b").vocab_size == 152064
    assert preset("codellama-7b").vocab_size == 32016 and preset("codellama_7b").rope_theta == 1e6
    assert preset("qwen-1.8b").intermediate_size == 5504 and preset("qwen_1_8b").family == "qwen"
    assert abs(preset("qwen2_5_1_5b").num_params() - 1.54e9) / 1.54e9 < 0.01
    assert abs(preset("codellama_7b").num_params() - 6.74e9) / 6.74e9 < 0.01
    with pytest.raises(ValueError, match="unknown model preset 'gpt2'; valid presets: codellama_13b, "):
        preset("gpt2")
    with pytest.raises(ValueError, match="'qwen2.5-1b'; did you mean qwen2_5_1_5b"):
        preset("qwen2.5-1b")
