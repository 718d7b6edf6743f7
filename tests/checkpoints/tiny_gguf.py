"""Tiny GGUF files written from tiny random transformers models, for the import tests.

`write_gguf(model, path, types)` stores a Llama or Qwen2 transformers model as
llama.cpp's converter lays it out: llama.cpp tensor names, matrices [out, in]
(GGUF lists the inner dimension first), Llama's q/k rows permuted for
interleaved RoPE, each tensor in the GGML type `types` picks for it, quantized
by gguf's own quantizer. The metadata carries the bundled 1,024-token
tokenizer (vocabulary, merges, special tokens, ChatML template), so the models
are built with vocabulary 1,024.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import torch
import transformers

from cmat_jax.data.tokenizer import bundled_tokenizer_dir
from tests import tiny_hf

Q = gguf.GGMLQuantizationType

VARIANTS = {
    # Untied Llama with grouped kv heads: the k permutation uses the kv head count.
    "llama": ("llama", dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
                            tie_word_embeddings=False, max_position_embeddings=256)),
    # Tied Qwen2: no output.weight in the file.
    "qwen2": ("qwen2", dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                            tie_word_embeddings=True, max_position_embeddings=256)),
}

HF_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

F32_ONLY = {}  # every tensor in float32: the import must return the weights exactly
MIXED = {"token_embd": Q.F16, "output": Q.Q8_0, "attn_q": Q.Q8_0, "attn_k": Q.Q4_1, "attn_v": Q.Q8_0,
         "attn_output": Q.Q4_1, "ffn_gate": Q.Q4_1, "ffn_up": Q.Q8_0, "ffn_down": Q.F16}
OTHER = {"token_embd": Q.Q4_0, "attn_q": Q.BF16, "attn_k": Q.Q4_0, "ffn_up": Q.BF16}


def make_model(variant: str, seed: int = 0) -> transformers.PreTrainedModel:
    family, kwargs = VARIANTS[variant]
    config_cls = transformers.LlamaConfig if family == "llama" else transformers.Qwen2Config
    model_cls = transformers.LlamaForCausalLM if family == "llama" else transformers.Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    tiny_hf.randomize(model, seed)
    return model


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{HF_TO_GGUF[module]}.{kind}"


def permute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face rows -> llama.cpp's: per head, row j and row j + head_dim/2 become rows 2j and 2j+1."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """llama.cpp name -> float32 array as llama.cpp's converter would store it (before quantization)."""
    c = model.config
    llama = c.model_type == "llama"
    out = {}
    for name, value in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        arr = value.detach().float().numpy().copy()
        if llama and ".q_proj." in name:
            arr = permute_rope_rows(arr, c.num_attention_heads)
        elif llama and ".k_proj." in name:
            arr = permute_rope_rows(arr, c.num_key_value_heads)
        out[gguf_name(name)] = arr
    return out


def _tokenizer_metadata(writer: gguf.GGUFWriter) -> None:
    directory = bundled_tokenizer_dir()
    tok = json.loads((directory / "tokenizer.json").read_text())
    config = json.loads((directory / "tokenizer_config.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    special = {t["content"] for t in tok["added_tokens"] if t["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")  # digits split one by one, then GPT-2's split: as the bundled tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(config["chat_template"])


def write_gguf(model, path: str, types: dict, *, tokenizer: bool = True, architecture: str | None = None,
               extra_tensors: dict | None = None) -> str:
    """Writes `model` to `path`; `types` maps a llama.cpp tensor kind ('attn_q', 'token_embd', ...) to its
    GGML type (default F32). `architecture` overrides general.architecture (to test refusals)."""
    c = model.config
    arch = architecture or c.model_type
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"tiny random {c.model_type}")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(tiny_hf._theta(c)))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    if tokenizer:
        _tokenizer_metadata(writer)
    tensors = gguf_tensors(model)
    tensors.update(extra_tensors or {})
    for name, arr in tensors.items():
        kind = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        qtype = types.get(kind, Q.F32) if arr.ndim == 2 else Q.F32  # llama.cpp keeps norms and biases in F32
        if qtype == Q.F32:
            writer.add_tensor(name, arr)
        elif qtype == Q.F16:
            writer.add_tensor(name, arr.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
