"""LoRA SFT of CodeLlama-7B-Instruct (the paper's TinyAgent-7B base).

    python -m cmat_jax.train --config configs/sft_codellama_7b.py \
        --config.model.hf_dir=/models/CodeLlama-7b-Instruct-hf \
        --config.data.agent=/data/agent.jsonl --config.data.general=/data/general.jsonl

bf16; the 'save_linear' remat policy; a batch of 16 x 4096 in 8 microbatches
of 2 rows, loss in chunks of 256 positions (measured: 2 x 4096 per microbatch
peaks at 37.7 GiB on one H100, docs/benchmarks.md); parameters sharded over all
devices (fsdp), so two or more GPUs split the 13 GB of frozen weights.
"""

from cmat_jax.training.config import tinyagent_config


def get_config():
    c = tinyagent_config("codellama_7b")
    c.train.microbatches = 8
    c.train.loss_chunk_size = 256
    return c
