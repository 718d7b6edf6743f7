"""tools/check_parity.py passes on good conversions and names the layer of a bad one."""

import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cmat_jax.checkpoints.hf import load_hf_model, save_hf_model
from tests import tiny_hf
from tools import check_parity


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    out = {}
    for variant in sorted(tiny_hf.VARIANTS):
        out[variant] = tiny_hf.save_hf(tiny_hf.make_hf_model(variant), str(tmp_path_factory.mktemp(variant)))
    out["qwen_original"] = tiny_hf.write_original_qwen(tiny_hf.make_mha_qwen2(),
                                                       str(tmp_path_factory.mktemp("qwen_original")))
    return out


def test_passes_on_every_family(dirs, capsys):
    for name, path in dirs.items():
        assert check_parity.main(["--hf-dir", path]) == 0, name
        assert capsys.readouterr().out.strip().splitlines()[-1].startswith("max abs logit diff")


def test_passes_against_an_export_including_greedy_tokens(dirs, tmp_path, capsys):
    src = dirs["llama_gqa_linear_rope"]
    save_hf_model(load_hf_model(src), str(tmp_path), source_dir=src)
    assert check_parity.main(["--hf-dir", src, "--against", str(tmp_path), "--generate", "5"]) == 0
    assert capsys.readouterr().out.count("5 greedy tokens identical") == 3


def test_fails_on_a_perturbed_copy_naming_the_layer(dirs, tmp_path, capsys):
    src = dirs["qwen2_untied_mqa"]
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name] = tensors[name] + np.float32(0.01)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert check_parity.main(["--hf-dir", src, "--against", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "first diverging layer: 1" in out
    assert out.strip().splitlines()[-1].endswith("FAIL")


def test_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert check_parity.main(["--hf-dir", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
