"""Model shapes: one frozen dataclass, presets named for the checkpoints they match,
and a constructor from a Hugging Face `config.json`.

Only what changes the math lives here. Run settings (dtypes, remat, attention
kernel) are arguments of the model, set from configs/.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any, Optional, Union

SUPPORTED_MODEL_TYPES = ("qwen2", "llama", "qwen")


class ConfigError(ValueError):
    """A Hugging Face config that cmat_jax cannot represent exactly."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and math of a Qwen2 / Llama / original-Qwen decoder.

    `family` records where the weights come from: 'qwen2', 'llama', or 'qwen'
    (the original QWenLMHeadModel, whose fused c_attn and w1/w2 layout map onto
    the same decoder).
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # width of each SwiGLU half
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 1.0  # linear position interpolation; 1.0 = none
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    # Hard limit on positions, for checkpoints whose math changes past their
    # trained context (original Qwen's dynamic NTK and logn attention).
    context_limit: Optional[int] = None
    bos_token_id: Optional[int] = None
    # One id, or several where a checkpoint lists several (e.g. end of text and end of turn).
    eos_token_id: Union[int, tuple[int, ...], None] = None

    def __post_init__(self):
        if self.family not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"family {self.family!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim")
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, found {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count of the base model (no adapters)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * h * (self.num_heads + 2 * self.num_kv_heads) + self.num_heads * h * d
        if self.qkv_bias:
            attn += h * (self.num_heads + 2 * self.num_kv_heads)
        per_layer = attn + 3 * d * f + 2 * d
        total = self.num_layers * per_layer + d
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return total

    def check_length(self, length: int) -> None:
        """Refuses sequence lengths whose math this decoder does not reproduce."""
        if self.context_limit is not None and length > self.context_limit:
            raise ValueError(
                f"sequence length {length} exceeds this checkpoint's trained context of "
                f"{self.context_limit} tokens; past it the original model switches on dynamic NTK "
                "and logn attention scaling, which cmat_jax does not implement. Use shorter sequences."
            )


def _qwen2(vocab, d, f, layers, heads, kv, tied, max_pos=32768) -> ModelConfig:
    return ModelConfig(
        family="qwen2", vocab_size=vocab, hidden_size=d, intermediate_size=f, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=d // heads, rope_theta=1e6, rms_norm_eps=1e-6,
        qkv_bias=True, tie_word_embeddings=tied, max_position_embeddings=max_pos,
    )


def _qwen(d, f_half, layers, heads, seq_length=8192) -> ModelConfig:
    return ModelConfig(
        family="qwen", vocab_size=151936, hidden_size=d, intermediate_size=f_half, num_layers=layers,
        num_heads=heads, num_kv_heads=heads, head_dim=d // heads, rope_theta=10000.0, rms_norm_eps=1e-6,
        qkv_bias=True, tie_word_embeddings=False, max_position_embeddings=seq_length,
        context_limit=seq_length,
    )


def _llama(vocab, d, f, layers, heads, kv, theta, max_pos) -> ModelConfig:
    return ModelConfig(
        family="llama", vocab_size=vocab, hidden_size=d, intermediate_size=f, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=d // heads, rope_theta=theta, rms_norm_eps=1e-5,
        qkv_bias=False, tie_word_embeddings=False, max_position_embeddings=max_pos,
    )


PRESETS: dict[str, ModelConfig] = {
    # The embedded default: pairs with the bundled 1024-token tokenizer.
    "tiny": ModelConfig(
        family="qwen2", vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6,
        qkv_bias=True, tie_word_embeddings=True, max_position_embeddings=2048,
    ),
    "qwen2_5_0_5b": _qwen2(151936, 896, 4864, 24, 14, 2, tied=True),
    "qwen2_5_1_5b": _qwen2(151936, 1536, 8960, 28, 12, 2, tied=True),
    "qwen2_5_3b": _qwen2(151936, 2048, 11008, 36, 16, 2, tied=True),
    "qwen2_5_7b": _qwen2(152064, 3584, 18944, 28, 28, 4, tied=False),
    "qwen2_0_5b": _qwen2(151936, 896, 4864, 24, 14, 2, tied=True, max_pos=131072),
    "qwen2_1_5b": _qwen2(151936, 1536, 8960, 28, 12, 2, tied=True, max_pos=131072),
    "qwen2_7b": _qwen2(152064, 3584, 18944, 28, 28, 4, tied=False, max_pos=131072),
    "qwen_1_8b": _qwen(2048, 5504, 24, 16),
    "qwen_7b": _qwen(4096, 11008, 32, 32),
    "codellama_7b": _llama(32016, 4096, 11008, 32, 32, 32, 1e6, 16384),
    "codellama_13b": _llama(32016, 5120, 13824, 40, 40, 40, 1e6, 16384),
    "codellama_34b": _llama(32000, 8192, 22016, 48, 64, 8, 1e6, 16384),
    "llama_2_7b": _llama(32000, 4096, 11008, 32, 32, 32, 1e4, 4096),
}


def preset(name: str) -> ModelConfig:
    """The preset called `name`; '-' and '.' may stand for '_' (qwen2.5-1.5b is qwen2_5_1_5b)."""
    key = str(name).replace("-", "_").replace(".", "_").lower()
    if key not in PRESETS:
        # ValueError, not KeyError: the CLIs print a bad setting's message as one line.
        nearest = difflib.get_close_matches(key, PRESETS, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(nearest)}? " if nearest else ""
        raise ValueError(f"unknown model preset {name!r}; {hint}valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


# ---------------------------------------------------------------------------
# Hugging Face config.json -> ModelConfig


def _rope_settings(hf: dict, where: str) -> tuple[float, float]:
    """(theta, linear factor) from either the old (`rope_theta` + `rope_scaling`)
    or the transformers-5 (`rope_parameters`) form; anything else is refused."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and "rope_type" not in params and params:
        # Per-layer-type form ({"full_attention": {...}}): one entry is all we support.
        if len(params) != 1:
            raise ConfigError(f"{where}: per-layer rope_parameters {sorted(params)} are not supported")
        params = next(iter(params.values()))
    scaling = params if isinstance(params, dict) else hf.get("rope_scaling")
    theta = (params or {}).get("rope_theta", hf.get("rope_theta", 10000.0))
    if not scaling:
        return float(theta), 1.0
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return float(theta), 1.0
    if kind == "linear":
        return float(theta), float(scaling["factor"])
    raise ConfigError(
        f"{where}: rope scaling type {kind!r} is not supported (only linear scaling is); "
        "remove it from config.json only if you will never run past the original context"
    )


def from_hf_config(hf: dict, where: str = "config.json") -> ModelConfig:
    """Builds a ModelConfig from a parsed Hugging Face config.json dict."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{where} has model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        if model_type == "qwen":
            return _from_original_qwen(hf, where)
        return _from_qwen2_or_llama(hf, model_type, where)
    except KeyError as e:
        raise ConfigError(f"{where} lacks the field {e.args[0]!r} needed for model_type {model_type!r}") from None


def _from_qwen2_or_llama(hf: dict, model_type: str, where: str) -> ModelConfig:
    if hf.get("use_sliding_window"):
        raise ConfigError(f"{where}: use_sliding_window=true is not supported; cmat_jax attends over the full context")
    if model_type == "llama" and (hf.get("mlp_bias") or hf.get("attention_bias")):
        raise ConfigError(f"{where}: Llama with attention_bias/mlp_bias is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported; expected 'silu'")
    theta, factor = _rope_settings(hf, where)
    heads = hf["num_attention_heads"]
    return ModelConfig(
        family=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or (hf["hidden_size"] // heads if heads else 0),  # 0: refused below
        rope_theta=theta,
        rope_scaling_factor=factor,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        qkv_bias=model_type == "qwen2",
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=_eos_ids(hf),
    )


def _eos_ids(hf: dict):
    """config.json's eos_token_id: an int, or a list kept whole (a tuple) when it names several ids."""
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
        return eos[0] if len(eos) == 1 else (tuple(eos) or None)
    return eos


def _from_original_qwen(hf: dict, where: str) -> ModelConfig:
    if hf.get("rope_scaling"):
        raise ConfigError(f"{where}: rope_scaling in an original Qwen config is not supported")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("kv_channels") or d // heads
    if head_dim * heads != d:
        raise ConfigError(f"{where}: kv_channels*num_attention_heads ({head_dim}*{heads}) != hidden_size ({d})")
    if hf["intermediate_size"] % 2:
        raise ConfigError(f"{where}: intermediate_size {hf['intermediate_size']} must be even (two SwiGLU halves)")
    if hf.get("rotary_pct", 1.0) != 1.0:
        raise ConfigError(f"{where}: rotary_pct {hf['rotary_pct']} is not supported; expected 1.0")
    seq_length = hf.get("seq_length", 2048)
    return ModelConfig(
        family="qwen",
        vocab_size=hf["vocab_size"],
        hidden_size=d,
        intermediate_size=hf["intermediate_size"] // 2,
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=head_dim,
        rope_theta=float(hf.get("rotary_emb_base", 10000.0)),
        rms_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        qkv_bias=True,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", seq_length),
        # Dynamic NTK and logn attention change nothing up to seq_length and are
        # not implemented beyond it, so longer inputs are refused.
        context_limit=seq_length if (hf.get("use_dynamic_ntk", True) or hf.get("use_logn_attn", True)) else None,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=_eos_ids(hf),
    )


def load_hf_config(model_dir: str) -> tuple[ModelConfig, dict]:
    """Reads DIR/config.json; returns (ModelConfig, the raw dict)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a directory; expected a Hugging Face model directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} has no config.json; expected a Hugging Face model directory")
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    return from_hf_config(hf, where=path), hf


def to_hf_config(cfg: ModelConfig, dtype_name: str = "float32") -> dict:
    """A transformers config.json for `cfg`. Original Qwen is written as Qwen2,
    which computes the same function and loads without remote code."""
    model_type = "llama" if cfg.family == "llama" else "qwen2"
    out: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if cfg.rope_scaling_factor == 1.0
        else {"type": "linear", "rope_type": "linear", "factor": cfg.rope_scaling_factor},
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": dtype_name,
        "use_cache": True,
    }
    if model_type == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    else:
        out.update(use_sliding_window=False, max_window_layers=cfg.num_layers)
    if cfg.bos_token_id is not None:
        out["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        eos = cfg.eos_token_id
        out["eos_token_id"] = list(eos) if isinstance(eos, tuple) else eos
    return out

