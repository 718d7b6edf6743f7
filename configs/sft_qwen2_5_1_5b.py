"""LoRA SFT of Qwen2.5-1.5B-Instruct on agent trajectories mixed with general instructions.

    python -m cmat_jax.train --config configs/sft_qwen2_5_1_5b.py \
        --config.model.hf_dir=/models/Qwen2.5-1.5B-Instruct \
        --config.data.agent=/data/agent.jsonl --config.data.general=/data/general.jsonl

bf16 weights and compute; the batch of 16 x 4096 tokens runs as 4 microbatches
of 4 rows, each layer rematerialised except its attention/MLP outputs, and the
152k-vocabulary cross-entropy in chunks of 512 positions. The mesh shards
parameters over all devices (fsdp); on a pod slice set mesh.data as well.
"""

from cmat_jax.training.config import tinyagent_config


def get_config():
    c = tinyagent_config("qwen2_5_1_5b")
    c.train.microbatches = 4
    c.train.loss_chunk_size = 512
    return c
