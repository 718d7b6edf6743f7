"""Hugging Face import and export.

Import reads a local model directory (config.json + safetensors, one file or
sharded) straight into the target sharding: each device's shard of each stacked
parameter is filled from the memory-mapped file, one layer tensor at a time, so
a 7B model never sits in host memory twice.

Export writes config.json, generation_config.json, safetensors (sharded above a
size limit) and copies tokenizer files; `save_peft_adapter` writes adapters in
PEFT's LoRA format. Original Qwen checkpoints are exported in the Qwen2 layout,
which computes the same function and needs no remote code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmat_jax import sharding as sharding_lib
from cmat_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsDir, write_safetensors, write_sharded
from cmat_jax.fileio import write_json_atomic
from cmat_jax.models.config import ModelConfig, load_hf_config, to_hf_config
from cmat_jax.models.lora import LoRA, LoRAConfig, lora_delta
from cmat_jax.models.transformer import Transformer

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json", "qwen.tiktoken",
)
# Tensors some published checkpoints carry that the math does not use.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")

# Our projection name -> (Qwen2/Llama module path inside a layer, PEFT target name)
PROJECTIONS = {
    ("attn", "q"): "self_attn.q_proj",
    ("attn", "k"): "self_attn.k_proj",
    ("attn", "v"): "self_attn.v_proj",
    ("attn", "o"): "self_attn.o_proj",
    ("mlp", "gate"): "mlp.gate_proj",
    ("mlp", "up"): "mlp.up_proj",
    ("mlp", "down"): "mlp.down_proj",
}
NORMS = {("attn_norm",): "input_layernorm", ("mlp_norm",): "post_attention_layernorm"}


@dataclasses.dataclass(frozen=True)
class TensorSource:
    """Where one per-layer (or global) tensor of our model lives in an HF checkpoint.

    `name` may hold '{i}' for the layer index. `transpose` for torch Linear
    weights ([out, in] -> our [in, out]); `rows` selects a row range of a fused
    tensor (original Qwen's c_attn) before transposing.
    """

    name: str
    transpose: bool = False
    rows: Optional[tuple[int, int]] = None

    def resolve(self, layer: Optional[int]) -> str:
        return self.name.format(i=layer) if layer is not None else self.name


def qwen2_llama_layout(cfg: ModelConfig) -> dict[tuple, TensorSource]:
    """Our state path -> tensor source, for Qwen2/Llama checkpoints (and our exports)."""
    layout = {
        ("embed", "table"): TensorSource("model.embed_tokens.weight"),
        ("final_norm", "scale"): TensorSource("model.norm.weight"),
    }
    for ours, theirs in NORMS.items():
        layout[("blocks",) + ours + ("scale",)] = TensorSource(f"model.layers.{{i}}.{theirs}.weight")
    for ours, theirs in PROJECTIONS.items():
        layout[("blocks",) + ours + ("kernel",)] = TensorSource(f"model.layers.{{i}}.{theirs}.weight", transpose=True)
        if cfg.qkv_bias and ours[1] in ("q", "k", "v"):
            layout[("blocks",) + ours + ("bias",)] = TensorSource(f"model.layers.{{i}}.{theirs}.bias")
    if not cfg.tie_word_embeddings:
        layout[("lm_head", "kernel")] = TensorSource("lm_head.weight", transpose=True)
    return layout


def original_qwen_layout(cfg: ModelConfig) -> dict[tuple, TensorSource]:
    """Our state path -> tensor source, for original Qwen (QWenLMHeadModel) checkpoints.

    c_attn fuses q, k, v along its output rows. In its MLP, w2 is the gated half
    (SiLU is applied to w2's output) and w1 the up projection.
    """
    d = cfg.num_heads * cfg.head_dim
    attn = "transformer.h.{i}.attn"
    layout = {
        ("embed", "table"): TensorSource("transformer.wte.weight"),
        ("final_norm", "scale"): TensorSource("transformer.ln_f.weight"),
        ("blocks", "attn_norm", "scale"): TensorSource("transformer.h.{i}.ln_1.weight"),
        ("blocks", "mlp_norm", "scale"): TensorSource("transformer.h.{i}.ln_2.weight"),
        ("blocks", "attn", "o", "kernel"): TensorSource(f"{attn}.c_proj.weight", transpose=True),
        ("blocks", "mlp", "gate", "kernel"): TensorSource("transformer.h.{i}.mlp.w2.weight", transpose=True),
        ("blocks", "mlp", "up", "kernel"): TensorSource("transformer.h.{i}.mlp.w1.weight", transpose=True),
        ("blocks", "mlp", "down", "kernel"): TensorSource("transformer.h.{i}.mlp.c_proj.weight", transpose=True),
    }
    for j, proj in enumerate("qkv"):
        rows = (j * d, (j + 1) * d)
        layout[("blocks", "attn", proj, "kernel")] = TensorSource(f"{attn}.c_attn.weight", True, rows)
        layout[("blocks", "attn", proj, "bias")] = TensorSource(f"{attn}.c_attn.bias", False, rows)
    if not cfg.tie_word_embeddings:
        layout[("lm_head", "kernel")] = TensorSource("lm_head.weight", transpose=True)
    return layout


def checkpoint_layout(cfg: ModelConfig) -> dict[tuple, TensorSource]:
    return original_qwen_layout(cfg) if cfg.family == "qwen" else qwen2_llama_layout(cfg)


# ---------------------------------------------------------------------------
# import


def _read_layer(tensors: SafetensorsDir, source: TensorSource, layer: Optional[int], expected: tuple,
                dtype) -> np.ndarray:
    name = source.resolve(layer)
    if name not in tensors:
        raise CheckpointError(f"tensor {name!r} is missing from the checkpoint; the model config needs it")
    arr = tensors.read(name)
    if source.rows is not None:
        lo, hi = source.rows
        if arr.shape[0] < hi:
            raise CheckpointError(
                f"{tensors.file_of(name)}: tensor {name!r} has shape {arr.shape}; expected at least {hi} rows"
            )
        arr = arr[lo:hi]
    if source.transpose:
        arr = arr.T
    if tuple(arr.shape) != tuple(expected):
        found = tensors.shape(name)
        raise CheckpointError(
            f"{tensors.file_of(name)}: tensor {name!r} has shape {tuple(found)}, which does not fit the model "
            f"config (expected {tuple(expected)} after layout conversion); check config.json against the weights"
        )
    return arr.astype(dtype)


def _load_leaf(tensors: SafetensorsDir, source: TensorSource, stacked: bool, shape: tuple, dtype,
               target_sharding) -> jax.Array:
    """One parameter, filled shard by shard straight into its target sharding."""
    layer_shape = shape[1:] if stacked else shape
    if not stacked:
        host = _read_layer(tensors, source, None, layer_shape, dtype)
        return jax.make_array_from_callback(shape, target_sharding, lambda idx: host[idx])

    def fill(index):
        layers = range(*index[0].indices(shape[0]))
        return np.stack([_read_layer(tensors, source, i, layer_shape, dtype)[index[1:]] for i in layers])

    return jax.make_array_from_callback(shape, target_sharding, fill)


def _path_key(path) -> tuple:
    return tuple(getattr(p, "key", p) for p in path)


def load_hf_model(model_dir: str, *, lora: Optional[LoRAConfig] = None, dtype=jnp.float32, param_dtype=jnp.float32,
                  mesh=None, rules: Optional[dict] = None, remat: str = "none", attention_impl: str = "auto",
                  decode_attention: str = "xla", seed: int = 0) -> Transformer:
    """A Transformer with weights from a local Hugging Face directory.

    LoRA adapters, when requested, are freshly initialised (B = 0). Without a
    mesh, everything lives on the default device.
    """
    cfg, _ = load_hf_config(model_dir)
    tensors = SafetensorsDir(model_dir)
    layout = checkpoint_layout(cfg)
    _check_no_unknown_tensors(tensors, layout, cfg, model_dir)

    def make():
        return Transformer(cfg, lora=lora, dtype=dtype, param_dtype=param_dtype, remat=remat,
                           attention_impl=attention_impl, decode_attention=decode_attention, rngs=nnx.Rngs(seed))

    abstract = nnx.eval_shape(make)
    graphdef, lora_abs, base_abs = nnx.split(abstract, LoRA, ...)
    if mesh is None:
        device_sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        lora_shard = jax.tree.map(lambda _: device_sharding, lora_abs)
        shard_of = lambda var: device_sharding  # noqa: E731
    else:
        lora_shard = sharding_lib.state_shardings(lora_abs, mesh, rules)
        shard_of = lambda var: sharding_lib.named_sharding(  # noqa: E731
            var.get_metadata()["axes"], var.shape, mesh, rules)

    # Adapters: initialise under jit; XLA drops the unused base initialisation.
    lora_state = jax.jit(lambda: nnx.state(make(), LoRA), out_shardings=lora_shard)()

    def load(path, var):
        key = _path_key(path)
        if key not in layout:
            raise CheckpointError(f"no checkpoint tensor maps to model parameter {'.'.join(map(str, key))}")
        arr = _load_leaf(tensors, layout[key], key[0] == "blocks", var.shape, var.dtype, shard_of(var))
        return var.replace(arr)

    base_state = jax.tree_util.tree_map_with_path(load, base_abs, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, lora_state, base_state)


def _check_no_unknown_tensors(tensors: SafetensorsDir, layout, cfg: ModelConfig, model_dir: str) -> None:
    known = set()
    for key, source in layout.items():
        if key[0] == "blocks":
            known.update(source.resolve(i) for i in range(cfg.num_layers))
        else:
            known.add(source.name)
    if cfg.tie_word_embeddings:
        known.add("lm_head.weight")  # some tied checkpoints still store the shared matrix
    unknown = [n for n in tensors.names if n not in known and not n.endswith(IGNORED_SUFFIXES)]
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (" ..." if len(unknown) > 5 else "")
        raise CheckpointError(
            f"{model_dir} holds {len(unknown)} tensors that config.json's model does not use ({shown}); "
            "the config and the weights disagree (e.g. num_hidden_layers or tie_word_embeddings)"
        )


# ---------------------------------------------------------------------------
# export


def _to_host(x: jax.Array, dtype) -> np.ndarray:
    return np.asarray(jax.device_get(x)).astype(dtype)


def _linear_modules(model: Transformer) -> dict[tuple, nnx.Module]:
    return {ours: getattr(getattr(model.blocks, ours[0]), ours[1]) for ours in PROJECTIONS}


def _export_tensors(model: Transformer, dtype, merge_adapters: bool) -> Iterator[tuple[str, np.ndarray]]:
    """(Qwen2/Llama tensor name, array) pairs, one layer at a time, adapters merged."""
    cfg = model.cfg
    layout = qwen2_llama_layout(cfg)
    state = nnx.state(model)
    yield layout[("embed", "table")].name, _to_host(model.embed.table[...], dtype)
    linears = _linear_modules(model)
    for i in range(cfg.num_layers):
        for key, source in layout.items():
            if key[0] != "blocks":
                continue
            value = _get(state, key)[i]
            module = linears.get(key[1:3])
            if key[-1] == "kernel" and merge_adapters and module is not None and module.lora_a is not None:
                delta = lora_delta(module.lora_a[...][i], module.lora_b[...][i], module.lora_scale)
                value = value.astype(jnp.float32) + delta
            arr = _to_host(value, dtype)
            yield source.resolve(i), arr.T if source.transpose else arr
    yield layout[("final_norm", "scale")].name, _to_host(model.final_norm.scale[...], dtype)
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", _to_host(model.lm_head.kernel[...], dtype).T


def _get(state, key):
    node = state
    for k in key:
        node = node[k]
    return node.get_value() if isinstance(node, nnx.Variable) else node


def _copy_tokenizer_files(source_dir: Optional[str], out_dir: str) -> list[str]:
    copied = []
    if source_dir:
        for name in TOKENIZER_FILES:
            src = os.path.join(source_dir, name)
            if os.path.isfile(src):
                shutil.copy2(src, os.path.join(out_dir, name))
                copied.append(name)
    return copied


def _write_json(path: str, obj: dict) -> None:
    write_json_atomic(path, obj, indent=2, sort_keys=True)


def save_hf_model(model: Transformer, out_dir: str, *, source_dir: Optional[str] = None, dtype=None,
                  max_shard_bytes: int = 5 * 2**30, merge_adapters: bool = True,
                  tokenizer_dir: Optional[str] = None) -> None:
    """Writes `model` as a Hugging Face directory that transformers loads.

    Adapters are merged into the kernels (in float32, then cast). `dtype`
    defaults to the parameters' dtype. generation_config.json is copied from
    `source_dir` when given, tokenizer files from `tokenizer_dir` (default:
    `source_dir`).
    """
    dtype = np.dtype(dtype or model.embed.table[...].dtype)
    os.makedirs(out_dir, exist_ok=True)
    write_sharded(out_dir, _export_tensors(model, dtype, merge_adapters), max_shard_bytes)
    _write_json(os.path.join(out_dir, "config.json"), to_hf_config(model.cfg, _torch_dtype_name(dtype)))
    _copy_tokenizer_files(tokenizer_dir or source_dir, out_dir)
    gen_src = os.path.join(source_dir, "generation_config.json") if source_dir else None
    if gen_src and os.path.isfile(gen_src):
        shutil.copy2(gen_src, os.path.join(out_dir, "generation_config.json"))
    else:
        gen = {k: v for k, v in (("bos_token_id", model.cfg.bos_token_id),
                                 ("eos_token_id", model.cfg.eos_token_id)) if v is not None}
        _write_json(os.path.join(out_dir, "generation_config.json"), gen)


def _torch_dtype_name(dtype: np.dtype) -> str:
    return {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(np.dtype(dtype).name, "float32")


PEFT_TARGETS = {key: path.split(".")[-1] for key, path in PROJECTIONS.items()}


def save_peft_adapter(model: Transformer, out_dir: str, *, base_model_dir: Optional[str] = None,
                      dtype=np.float32) -> None:
    """Writes the LoRA adapters as a PEFT adapter directory
    (adapter_config.json + adapter_model.safetensors).

    The adapter applies to the Qwen2/Llama layout of the base, i.e. to the
    source checkpoint itself, or for original Qwen to its `save_hf_model` export.
    """
    lcfg = model.lora_config
    if lcfg is None:
        raise ValueError("the model has no LoRA adapters to export; build it with lora=LoRAConfig(...)")
    if model.cfg.family == "qwen" and base_model_dir is not None:
        _, raw = load_hf_config(base_model_dir)
        if raw.get("model_type") == "qwen":
            raise ValueError(
                f"{base_model_dir} is an original-Qwen checkpoint, whose fused c_attn PEFT cannot target per "
                "projection; export the base with save_hf_model(model, dir, merge_adapters=False) and use that "
                "directory as the adapter's base"
            )
    tensors = {}
    targets = []
    for key, module in _linear_modules(model).items():
        if module.lora_a is None:
            continue
        targets.append(PEFT_TARGETS[key])
        a_lir, b_lro = module.lora_a[...], module.lora_b[...]
        for i in range(model.cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{PROJECTIONS[key]}"
            tensors[f"{prefix}.lora_A.weight"] = _to_host(a_lir[i], dtype).T
            tensors[f"{prefix}.lora_B.weight"] = _to_host(b_lro[i], dtype).T
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"), tensors)
    _write_json(os.path.join(out_dir, "adapter_config.json"), {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": os.path.abspath(base_model_dir) if base_model_dir else None,
        "r": lcfg.rank,
        "lora_alpha": lcfg.alpha,
        "lora_dropout": lcfg.dropout,
        "target_modules": sorted(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    })
