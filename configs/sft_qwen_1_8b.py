"""LoRA SFT of the original Qwen-1.8B-Chat (the paper's TinyAgent-1.8B base).

    python -m cmat_jax.train --config configs/sft_qwen_1_8b.py \
        --config.model.hf_dir=/models/Qwen-1_8B-Chat --config.data.agent=/data/agent.jsonl

Its qwen.tiktoken tokenizer loads only through the checkpoint's own remote
code, so point --config.data.tokenizer at a directory holding the same
vocabulary as a tokenizer.json with a ChatML chat template.
The checkpoint's trained context is 8192 tokens (longer inputs are refused);
sequences here are 4096. bf16, a batch of 16 x 4096 in 4 microbatches, the
152k-vocabulary cross-entropy in chunks of 512 positions.
"""

from cmat_jax.training.config import default_config


def get_config():
    c = default_config()
    c.workdir = "workdir/sft_qwen_1_8b"
    c.model.preset = "qwen_1_8b"  # the shape, for --config.model.random_init=true speed runs
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "save_linear"
    c.lora.rank = 16
    c.lora.alpha = 32.0
    c.lora.dropout = 0.05
    c.data.agent_fraction = 0.2
    c.data.batch_size = 16
    c.data.seq_len = 4096
    c.train.microbatches = 4
    c.train.loss_chunk_size = 512
    c.train.steps = 2000
    c.train.learning_rate = 2e-4
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    return c
