"""From a run config to objects: mesh, LoRA settings, model, tokenizer, SFT batches.

Shared by the trainer and by tools that rebuild a run's model (export,
evaluation), so the frozen base is always constructed the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmat_jax import sharding as sharding_lib
from cmat_jax.models.config import preset
from cmat_jax.models.layers import INIT_STD, Embedding, Linear
from cmat_jax.models.lora import LoRAConfig
from cmat_jax.models.transformer import Transformer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str, field: str):
    if name not in DTYPES:
        raise ValueError(f"{field} is {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def make_mesh(mesh_config) -> jax.sharding.Mesh:
    return sharding_lib.make_mesh(int(mesh_config.data), int(mesh_config.fsdp), int(mesh_config.tensor))


def lora_config(lora) -> LoRAConfig:
    """`lora.targets` is a list of projection names, a comma-separated string of them, or one regex."""
    targets = lora.targets
    if isinstance(targets, str) and "," in targets:
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    elif not isinstance(targets, str):
        targets = list(targets)
    return LoRAConfig(rank=int(lora.rank), alpha=float(lora.alpha), dropout=float(lora.dropout), targets=targets)


def _random_model(config, lora: LoRAConfig, mesh) -> Transformer:
    """The preset's shape with a seeded random init, created directly on its shards.

    Embeddings and projection kernels are drawn with std `model.init_std`. With
    the usual 0.02 a frozen random base caps every logit near
    sqrt(hidden_size) * 0.02 * sqrt(hidden_size) (the final norm fixes the
    hidden state's length), so no adapter can make a confident prediction; the
    tiny demo uses a wider init.
    """
    m = config.model
    cfg = preset(m.preset)
    dtype = dtype_from_name(m.dtype, "model.dtype")
    param_dtype = dtype_from_name(m.param_dtype, "model.param_dtype")
    if float(m.init_std) <= 0:
        raise ValueError(f"model.init_std must be positive, found {m.init_std}")
    factor = float(m.init_std) / INIT_STD

    def make():
        model = Transformer(cfg, lora=lora, dtype=dtype, param_dtype=param_dtype, remat=m.remat,
                            attention_impl=m.attention_impl, rngs=nnx.Rngs(int(config.seed)))
        if factor != 1.0:
            for _, module in nnx.iter_graph(model):
                weight = module.kernel if isinstance(module, Linear) else \
                    module.table if isinstance(module, Embedding) else None
                if weight is not None:
                    weight[...] = (weight[...] * factor).astype(weight.dtype)
        return model

    graphdef, abstract = nnx.split(nnx.eval_shape(make))
    shardings = sharding_lib.state_shardings(abstract, mesh)
    state = jax.jit(lambda: nnx.state(make()), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def build_model(config, mesh) -> Transformer:
    """The run's model with fresh adapters: from `model.hf_dir` when set, else the seeded preset."""
    lora = lora_config(config.lora)
    m = config.model
    if m.hf_dir and m.random_init:
        raise ValueError("model.hf_dir and model.random_init are both set; choose one")
    if m.hf_dir:
        from cmat_jax.checkpoints.hf import load_hf_model

        return load_hf_model(m.hf_dir, lora=lora, dtype=dtype_from_name(m.dtype, "model.dtype"),
                             param_dtype=dtype_from_name(m.param_dtype, "model.param_dtype"), mesh=mesh,
                             remat=m.remat, attention_impl=m.attention_impl, seed=int(config.seed))
    if not m.random_init:
        raise ValueError(
            "model.hf_dir is empty: set --config.model.hf_dir=/path/to/a/local/model, or "
            f"--config.model.random_init=true to tune a randomly initialised {m.preset!r} model"
        )
    return _random_model(config, lora, mesh)


def tokenizer_path(config):
    """`data.tokenizer`, else the model directory's tokenizer, else (None) the bundled one."""
    return config.data.tokenizer or config.model.hf_dir or None


def build_batches(config, tokenizer, rows=None):
    """The SFT batches of `config.data`; `rows`: the indices of each batch's rows this process builds."""
    from cmat_jax.data import make_sft_batches

    d = config.data
    if not d.agent:
        raise ValueError("data.agent is empty; set it to a JSONL file or a TFDS directory built by tools/build_tfds.py")
    buckets = tuple(int(b) for b in d.bucket_lengths) if d.get("bucket_lengths") else None
    if buckets and d.mode != "bucketed":
        raise ValueError(f"data.bucket_lengths is set but data.mode is {d.mode!r}; buckets apply only to "
                         "--config.data.mode=bucketed")
    if d.general and float(d.agent_fraction) >= 1.0:
        raise ValueError("data.general is set but data.agent_fraction is 1.0, so it would never be drawn; "
                         "lower data.agent_fraction or leave data.general empty")
    return make_sft_batches(
        tokenizer, d.agent, d.general or None, agent_fraction=float(d.agent_fraction),
        batch_size=int(d.batch_size), seq_len=int(d.seq_len), mode=d.mode, seed=int(d.seed),
        overlong=d.overlong, bucket_lengths=buckets, split=d.split, rows=rows,
    )
