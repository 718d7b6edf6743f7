"""LoRA SFT of the original Qwen-1.8B-Chat (the paper's TinyAgent-1.8B base).

    python -m cmat_jax.train --config configs/sft_qwen_1_8b.py \
        --config.model.hf_dir=/models/Qwen-1_8B-Chat --config.data.tokenizer=/models/qwen-1_8b-tokenizer \
        --config.data.agent=/data/agent.jsonl --config.data.general=/data/general.jsonl

Its qwen.tiktoken tokenizer loads only through the checkpoint's own remote
code, so point --config.data.tokenizer at a directory holding the same
vocabulary as a tokenizer.json with a ChatML chat template.
The checkpoint's trained context is 8192 tokens (longer inputs are refused);
sequences here are 4096. bf16, a batch of 16 x 4096 in 4 microbatches, the
152k-vocabulary cross-entropy in chunks of 512 positions.
"""

from cmat_jax.training.config import tinyagent_config


def get_config():
    c = tinyagent_config("qwen_1_8b")
    c.train.microbatches = 4
    c.train.loss_chunk_size = 512
    return c
