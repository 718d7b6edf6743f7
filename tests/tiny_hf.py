"""Tiny random Hugging Face models (PyTorch, CPU, float32) for parity tests.

Weights are redrawn with a larger spread than transformers' default init so
that logits differ by whole units between tokens and a wrong layout or a
mis-applied bias cannot hide under a 1e-4 tolerance.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

# name -> (model class, config kwargs)
VARIANTS = {
    "qwen2_tied_gqa": ("qwen2", dict(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                     rope_theta=1e6, rms_norm_eps=1e-6)),
    "qwen2_untied_mqa": ("qwen2", dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                                       rope_theta=10000.0, rms_norm_eps=1e-6)),
    "llama_theta1e6_v32016": ("llama", dict(vocab_size=32016, hidden_size=64, intermediate_size=112,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                            rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "llama_gqa_linear_rope": ("llama", dict(vocab_size=512, hidden_size=64, intermediate_size=112,
                                            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                            rope_theta=10000.0, rms_norm_eps=1e-5,
                                            rope_scaling={"rope_type": "linear", "factor": 2.0})),
}


def make_hf_model(variant: str, seed: int = 0) -> transformers.PreTrainedModel:
    family, kwargs = VARIANTS[variant]
    config_cls = transformers.Qwen2Config if family == "qwen2" else transformers.LlamaConfig
    model_cls = transformers.Qwen2ForCausalLM if family == "qwen2" else transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    randomize(model, seed)
    return model


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def save_hf(model: transformers.PreTrainedModel, out_dir: str) -> str:
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def token_batch(vocab_size: int, seed: int = 0, batch: int = 3, length: int = 11, pad_left: int = 4):
    """Random ids, an attention mask whose last row is left-padded, and per-row positions."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[-1, :pad_left] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    return tokens, mask, positions


def hf_logits(model, tokens, mask) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()


def write_original_qwen(qwen2: transformers.Qwen2ForCausalLM, out_dir: str, seq_length: int = 64) -> str:
    """Writes a Qwen2 model's weights in the original Qwen (QWenLMHeadModel) layout.

    The Qwen2 model must have as many kv heads as heads and untied embeddings,
    as original Qwen does. c_attn fuses q, k, v; w2 is the gated half, w1 the up
    projection; config.json uses original Qwen's names.
    """
    c = qwen2.config
    assert c.num_key_value_heads == c.num_attention_heads and not c.tie_word_embeddings
    sd = {k: v.detach().clone() for k, v in qwen2.state_dict().items()}
    out = {"transformer.wte.weight": sd["model.embed_tokens.weight"],
           "transformer.ln_f.weight": sd["model.norm.weight"],
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(c.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"transformer.h.{i}."
        out[dst + "ln_1.weight"] = sd[src + "input_layernorm.weight"]
        out[dst + "ln_2.weight"] = sd[src + "post_attention_layernorm.weight"]
        for kind in ("weight", "bias"):
            out[dst + f"attn.c_attn.{kind}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
        out[dst + "attn.c_proj.weight"] = sd[src + "self_attn.o_proj.weight"]
        out[dst + "mlp.w1.weight"] = sd[src + "mlp.up_proj.weight"]
        out[dst + "mlp.w2.weight"] = sd[src + "mlp.gate_proj.weight"]
        out[dst + "mlp.c_proj.weight"] = sd[src + "mlp.down_proj.weight"]
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    config = {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "intermediate_size": 2 * c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "kv_channels": c.hidden_size // c.num_attention_heads, "rotary_emb_base": _theta(c),
        "rotary_pct": 1.0, "layer_norm_epsilon": c.rms_norm_eps, "seq_length": seq_length,
        "use_dynamic_ntk": True, "use_logn_attn": True, "no_bias": True, "tie_word_embeddings": False,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out_dir


def _theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def make_mha_qwen2(seed: int = 0) -> transformers.Qwen2ForCausalLM:
    """A Qwen2 model shaped like original Qwen: full multi-head attention, untied."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(vocab_size=700, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                                   rope_theta=10000.0, rms_norm_eps=1e-6)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    randomize(model, seed)
    return model
