"""LoRA SFT of CodeLlama-7B-Instruct (the paper's TinyAgent-7B base).

    python -m cmat_jax.train --config configs/sft_codellama_7b.py \
        --config.model.hf_dir=/models/CodeLlama-7b-Instruct-hf --config.data.agent=/data/agent.jsonl

bf16; the 'save_linear' remat policy; a batch of 16 x 4096 in 8 microbatches
of 2 rows (measured: 2 x 4096 per microbatch peaks at 37.7 GiB on one H100,
docs/benchmarks.md); parameters sharded over all devices (fsdp), so two or more
GPUs split the 13 GB of frozen weights.
"""

from cmat_jax.training.config import default_config


def get_config():
    c = default_config()
    c.workdir = "workdir/sft_codellama_7b"
    c.model.preset = "codellama_7b"  # the shape, for --config.model.random_init=true speed runs
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "save_linear"
    c.lora.rank = 16
    c.lora.alpha = 32.0
    c.lora.dropout = 0.05
    c.data.agent_fraction = 0.2
    c.data.batch_size = 16
    c.data.seq_len = 4096
    c.train.microbatches = 8
    c.train.loss_chunk_size = 1024
    c.train.steps = 2000
    c.train.learning_rate = 2e-4
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    return c
