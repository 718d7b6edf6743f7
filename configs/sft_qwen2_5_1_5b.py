"""LoRA SFT of Qwen2.5-1.5B-Instruct on agent trajectories mixed with general instructions.

    python -m cmat_jax.train --config configs/sft_qwen2_5_1_5b.py \
        --config.model.hf_dir=/models/Qwen2.5-1.5B-Instruct \
        --config.data.agent=/data/agent.jsonl --config.data.general=/data/general.jsonl

bf16 weights and compute; the batch of 16 x 4096 tokens runs as 4 microbatches
of 4 rows, each layer rematerialised except its attention/MLP outputs, and the
152k-vocabulary cross-entropy in chunks of 512 positions. The mesh shards
parameters over all devices (fsdp); on a pod slice set mesh.data as well.
"""

from cmat_jax.training.config import default_config


def get_config():
    c = default_config()
    c.workdir = "workdir/sft_qwen2_5_1_5b"
    c.model.preset = "qwen2_5_1_5b"  # the shape, for --config.model.random_init=true speed runs
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "save_linear"
    c.lora.rank = 16
    c.lora.alpha = 32.0
    c.lora.dropout = 0.05
    c.data.agent_fraction = 0.2  # AgentTuning's share of agent data in the mixture
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
