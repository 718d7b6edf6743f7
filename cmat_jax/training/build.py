"""From a run's typed settings (cmat_jax/settings/) to objects: mesh, LoRA config, model, SFT batches.

Shared by the trainer, the CMAT loop and the tools that rebuild a run's model
(export, evaluation), so the frozen base is always constructed the same way.
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
from cmat_jax.settings.model import DTYPE_NAMES, LoraSettings, MeshSettings, ModelSettings
from cmat_jax.settings.training import DataSettings

DTYPES = {name: getattr(jnp, name) for name in DTYPE_NAMES}  # checked names -> jnp dtypes


def make_mesh(mesh: MeshSettings) -> jax.sharding.Mesh:
    return sharding_lib.make_mesh(mesh.data, mesh.fsdp, mesh.tensor)


def lora_config(lora: LoraSettings) -> LoRAConfig:
    return LoRAConfig(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.target_names)


def _random_model(m: ModelSettings, lora: LoRAConfig, seed: int, mesh) -> Transformer:
    """The preset's shape with a seeded random init, created directly on its shards.

    Embeddings and projection kernels are drawn with std `model.init_std`. With
    the usual 0.02 a frozen random base caps every logit near
    sqrt(hidden_size) * 0.02 * sqrt(hidden_size) (the final norm fixes the
    hidden state's length), so no adapter can make a confident prediction; the
    tiny demo uses a wider init.
    """
    cfg = preset(m.preset)
    factor = m.init_std / INIT_STD

    def make():
        model = Transformer(cfg, lora=lora, dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype], remat=m.remat,
                            attention_impl=m.attention_impl, decode_attention=m.decode_attention,
                            rngs=nnx.Rngs(seed))
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


def build_model(m: ModelSettings, lora: LoraSettings, seed: int, mesh) -> Transformer:
    """The model with fresh adapters: from `model.hf_dir` when set, else the seeded random preset."""
    config = lora_config(lora)
    if m.hf_dir:
        from cmat_jax.checkpoints.hf import load_hf_model

        return load_hf_model(m.hf_dir, lora=config, dtype=DTYPES[m.dtype], param_dtype=DTYPES[m.param_dtype],
                             mesh=mesh, remat=m.remat, attention_impl=m.attention_impl,
                             decode_attention=m.decode_attention, seed=seed)
    return _random_model(m, config, seed, mesh)


def tokenizer_path(config):
    """`data.tokenizer`, else the model directory's tokenizer, else (None) the bundled one: of a saved run's
    config (read back from its config.json) or of RunSettings."""
    return config.data.tokenizer or config.model.hf_dir or None


def build_batches(d: DataSettings, tokenizer, agent: str, rows=None):
    """The SFT batches of `d` with `agent` as the agent data (data.agent, or a CMAT run's demonstrations);
    `rows`: the indices of each batch's rows this process builds (default all)."""
    from cmat_jax.data import make_sft_batches

    return make_sft_batches(
        tokenizer, agent, d.general or None, agent_fraction=d.agent_fraction, batch_size=d.batch_size,
        seq_len=d.seq_len, mode=d.mode, seed=d.seed, overlong=d.overlong, bucket_lengths=d.bucket_lengths,
        split=d.split, rows=rows,
    )
