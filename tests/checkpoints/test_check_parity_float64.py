"""tools/check_parity.py's float64 rule: an exact float64 reference, correct conversions pass, a wrong
q/k permutation or norm fails by orders of magnitude, and a truncated weights file is one line."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from cmat_jax.models.config import load_hf_config
from tests import tiny_hf
from tests.checkpoints import tiny_gguf
from tools import check_parity

FLOAT64_LINE = re.compile(r"float64 reference: transformers float32 error (\S+), cmat_jax float32 error (\S+) "
                          r"\(ratio (\S+), limit")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_hf.save_hf(tiny_hf.make_hf_model("llama_gqa_linear_rope"), str(tmp_path_factory.mktemp("llama")))


def _errors(out: str) -> tuple[float, float, float]:
    match = FLOAT64_LINE.search(out)
    assert match, out
    return tuple(float(x) for x in match.groups())


def _perturbed_copy(src: str, dst, change) -> str:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    tensors = load_file(str(dst / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def test_float64_reference_evaluates_norm_and_rope_in_float64(llama_dir):
    cfg, _ = load_hf_config(llama_dir)
    model = check_parity._reference_model(llama_dir, cfg, float64=True)
    x = torch.randn(2, 5, cfg.hidden_size, dtype=torch.float64) * 1e4
    norm = model.model.layers[0].input_layernorm
    w = norm.weight.detach().numpy()
    xn = x.numpy()
    want = w * xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + cfg.rms_norm_eps)
    np.testing.assert_allclose(norm(x).detach().numpy(), want, rtol=1e-13)
    positions = torch.arange(5)[None]
    cos, sin = model.model.rotary_emb(x, positions)
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim) / cfg.rope_scaling_factor
    angles = np.arange(5)[:, None] * inv
    np.testing.assert_allclose(cos[0].numpy(), np.cos(np.concatenate([angles, angles], -1)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sin[0].numpy(), np.sin(np.concatenate([angles, angles], -1)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("variant", ["llama_gqa_linear_rope", "qwen2_untied_mqa"])
def test_correct_conversion_passes_both_rules(variant, tmp_path, capsys):
    path = tiny_hf.save_hf(tiny_hf.make_hf_model(variant), str(tmp_path))
    assert check_parity.main(["--hf-dir", path, "--float64"]) == 0
    out = capsys.readouterr().out
    ref_error, ours_error, _ = _errors(out)
    assert 0 < ref_error < 1e-5 and ours_error < 1e-5
    assert out.strip().splitlines()[-1].endswith("(tolerance 0.0001) -> PASS")


def _wrong_permutation(tensors):
    """q/k left in llama.cpp's interleaved order: what an import that forgot to undo it produces."""
    for name in list(tensors):
        if ".q_proj.weight" in name:
            tensors[name] = tiny_gguf.permute_rope_rows(tensors[name], 8)
        elif ".k_proj.weight" in name:
            tensors[name] = tiny_gguf.permute_rope_rows(tensors[name], 2)


def _wrong_norm(tensors):
    """Norm weights stored as offsets from 1 (Gemma's convention) read as plain weights."""
    for name in list(tensors):
        if name.endswith("norm.weight"):
            tensors[name] = tensors[name] - np.float32(1.0)


@pytest.mark.parametrize("change", [_wrong_permutation, _wrong_norm])
def test_wrong_conversion_fails_by_orders_of_magnitude(llama_dir, change, tmp_path, capsys):
    bad = _perturbed_copy(llama_dir, tmp_path, change)
    # --atol 0 sends every comparison to the float64 rule
    assert check_parity.main(["--hf-dir", llama_dir, "--against", bad, "--atol", "0"]) == 1
    out = capsys.readouterr().out
    ref_error, ours_error, ratio = _errors(out)
    assert ratio > 1e4 * check_parity.FLOAT64_MULTIPLE, out
    assert out.strip().splitlines()[-1].endswith("-> FAIL")


def test_correct_conversion_passes_the_float64_rule_alone(llama_dir, tmp_path, capsys):
    from cmat_jax.checkpoints.hf import load_hf_model, save_hf_model

    save_hf_model(load_hf_model(llama_dir), str(tmp_path), source_dir=llama_dir)
    assert check_parity.main(["--hf-dir", llama_dir, "--against", str(tmp_path), "--atol", "0"]) == 0
    out = capsys.readouterr().out
    assert "tolerance 0 exceeded; float64 rule: cmat_jax error" in out
    assert out.strip().splitlines()[-1].endswith("-> PASS")


def test_truncated_weights_are_one_line(llama_dir, tmp_path, capsys):
    shutil.copytree(llama_dir, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert check_parity.main(["--hf-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "model.safetensors is truncated" in err
