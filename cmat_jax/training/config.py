"""The run configuration: every field the SFT trainer reads, with defaults.

configs/*.py start from `default_config()` and override what they need; any
field can then be set on the command line (`--config.train.steps=100`).
"""

from ml_collections import config_dict


def default_config() -> config_dict.ConfigDict:
    """Every field a run reads, with CPU-sized defaults; configs/*.py override what they need."""
    c = config_dict.ConfigDict()
    c.mode = "sft"  # sft | cmat (cmat runs start from cmat_config())
    c.workdir = "workdir/sft_tiny"
    c.seed = 0  # random base init (when model.hf_dir is empty), adapter init, LoRA dropout
    c.resume = False  # continue from the latest checkpoint in workdir
    c.overwrite = False  # a fresh run (resume false) replaces, deleting it, a run the workdir already holds

    c.model = config_dict.ConfigDict()
    c.model.hf_dir = ""  # a local Hugging Face model directory to tune
    # Without hf_dir: a random base of the preset's shape, only if random_init is
    # true (the embedded demo, tests, speed measurements at real shapes).
    c.model.random_init = False
    c.model.preset = "tiny"
    c.model.init_std = 0.02  # weight std of the random base
    c.model.dtype = "float32"  # compute dtype
    c.model.param_dtype = "float32"  # storage dtype of the frozen base
    c.model.remat = "none"  # none | full | dots | dots_no_batch | save_linear
    c.model.attention_impl = "auto"  # auto | xla | cudnn

    c.lora = config_dict.ConfigDict()
    c.lora.rank = 16
    c.lora.alpha = 32.0
    c.lora.dropout = 0.0
    c.lora.targets = "q,k,v,o,gate,up,down"  # comma-separated names, or one regex such as "q|v"

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1  # -1: all remaining devices
    c.mesh.tensor = 1

    c.data = config_dict.ConfigDict()
    c.data.tokenizer = ""  # empty: model.hf_dir's tokenizer, or the bundled one
    c.data.agent = ""  # JSONL file or TFDS directory (tools/build_tfds.py)
    c.data.general = ""  # empty: agent data only
    c.data.agent_fraction = 1.0  # share of examples drawn from the agent data
    c.data.split = "train"  # TFDS split
    c.data.batch_size = 8
    c.data.seq_len = 512
    c.data.mode = "packed"  # packed | bucketed
    c.data.bucket_lengths = config_dict.placeholder(tuple)  # bucketed mode; None: powers of two
    c.data.overlong = "truncate"  # truncate | drop
    c.data.seed = 0

    c.train = config_dict.ConfigDict()
    c.train.steps = 150
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 10
    c.train.decay = "cosine"  # cosine | linear | constant
    c.train.end_lr_ratio = 0.1
    c.train.weight_decay = 0.0
    c.train.max_grad_norm = 1.0  # <= 0: no clipping
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.eps = 1e-8
    c.train.microbatches = 1  # gradient accumulation: the batch runs in this many parts
    c.train.loss_chunk_size = 0  # sequence positions per cross-entropy chunk; 0: all at once
    c.train.adapter_dtype = "float32"  # adapters and their optimizer state
    c.train.nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does
    c.train.log_every = 1

    c.checkpoint = config_dict.ConfigDict()
    c.checkpoint.every = 50
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True
    # Where checkpoints go; empty: <workdir>/checkpoints. A run of several hosts needs storage every host
    # sees (a gs:// bucket, or a shared file system): orbax writes each host's shards there (docs/tpu.md).
    c.checkpoint.directory = ""

    # Several processes (hosts) as one program: cmat_jax/distributed.py, docs/tpu.md.
    c.distributed = config_dict.ConfigDict()
    c.distributed.initialize = "auto"  # auto (given settings or a TPU VM) | on | off
    c.distributed.coordinator_address = ""  # host:port of process 0; empty: $JAX_COORDINATOR_ADDRESS or detected
    c.distributed.num_processes = 0  # 0: $CMAT_NUM_PROCESSES or detected
    c.distributed.process_id = -1  # -1: $CMAT_PROCESS_ID or detected
    c.distributed.initialization_timeout_s = 300
    return c


def tinyagent_config(preset: str) -> config_dict.ConfigDict:
    """The shared recipe of the real-model configs (configs/sft_<preset>.py).

    bf16, 'save_linear' remat, LoRA rank 16 on every projection, a mixture with
    AgentTuning's 0.2 share of agent data, 16 x 4096-token batches; each config
    then sets what differs by model (microbatches, loss chunk, ...).
    """
    c = default_config()
    c.workdir = f"workdir/sft_{preset}"
    c.model.preset = preset  # the shape, for --config.model.random_init=true speed runs
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "save_linear"
    c.lora.rank = 16
    c.lora.alpha = 32.0
    c.lora.dropout = 0.05
    c.data.agent_fraction = 0.2
    c.data.batch_size = 16
    c.data.seq_len = 4096
    c.train.steps = 2000
    c.train.learning_rate = 2e-4
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.checkpoint.every = 200
    c.checkpoint.keep = 3
    return c


def cmat_config() -> config_dict.ConfigDict:
    """Every field a CMAT run reads (mode='cmat'): the SFT fields (model, LoRA, mesh, optimizer, checkpoints;
    `data` and `train.steps` describe the SFT warm start) plus tasks, rollouts, reflection, Checker and RL."""
    c = default_config()
    c.mode = "cmat"
    c.workdir = "workdir/cmat"
    c.train.steps = 0  # SFT warm-start steps on oracle trajectories of the training tasks (0: none)
    # Share of warm-start tasks played as recovery demonstrations: a typical mistaken first statement, its
    # error, then the gold statement (cmat_jax/agents/mistakes.py). 0: every demonstration is the gold run.
    c.train.recovery_fraction = 0.0
    # Share of warm-start tasks played as reflection demonstrations: a failed trial, a plan naming the mistake
    # (the reflection role's reply) and the retry shown that plan (cmat_jax/rl/reflection_demos.py). 0: none.
    c.train.reflection_fraction = 0.0
    # data.agent stays empty: the warm start trains on the oracle episodes of tasks.train (data.general may mix in)

    c.tasks = config_dict.ConfigDict()
    # Training tasks: a DBBench-format JSONL file, or tasks made by the seeded generator
    # (cmat_jax/envs/sql/generate.py) when empty.
    c.tasks.train = ""
    c.tasks.eval = ""  # held-out tasks for evaluation (JSONL, or generated when empty)
    c.tasks.generator_profile = "tiny"  # tiny | lookup | dbbench (cmat_jax/envs/sql/generate.py)
    c.tasks.train_count = 256
    c.tasks.eval_count = 64
    c.tasks.train_seed = 0
    c.tasks.eval_seed = 1  # another seed: other tables and questions

    c.rollout = config_dict.ConfigDict()
    c.rollout.tasks_per_iteration = 8  # B
    c.rollout.group_size = 4  # G samples per task
    c.rollout.max_new_tokens = 64
    c.rollout.temperature = 1.0
    c.rollout.top_k = 0  # 0: off
    c.rollout.top_p = 1.0  # 1.0: off
    c.rollout.max_len = 1024  # sampler context: prompt + new tokens
    c.rollout.max_rounds = 15  # statements per episode (DBBench v0.2)
    c.rollout.instructions = "dbbench"  # dbbench (v0.2's text, verbatim) | short (the same protocol in 71 tokens)
    c.rollout.curriculum = True
    c.rollout.curriculum_boost = 3.0
    # Decode with the layers unrolled (static weight slices) rather than scanned: about 1.7x the rollout speed
    # of a 30-layer SmolLM2-135M on one H200 (docs/benchmarks.md), at the price of more device memory.
    c.rollout.unroll_decode_layers = False
    c.rollout.cache = "persistent"  # persistent: each episode's KV cache kept across turns | reprefill: all each turn

    c.reflection = config_dict.ConfigDict()
    c.reflection.trials = 1  # 1: no reflection
    c.reflection.omega = 3
    c.reflection.max_new_tokens = 64

    c.checker = config_dict.ConfigDict()
    c.checker.mode = "static"  # off | static | learned | static+learned
    c.checker.train = False  # learned modes: train the Checker's own adapter (else it is the frozen base)
    c.checker.max_new_tokens = 32

    c.rl = config_dict.ConfigDict()
    c.rl.iterations = 20
    c.rl.objective = "ppo"  # ppo | reinforce
    c.rl.advantage = "grpo"  # grpo | rloo | reinforce
    c.rl.positive_only = False  # negative advantages become 0: only samples that beat their baseline are reinforced
    c.rl.clip_eps = 0.2
    c.rl.clip_eps_high = 0.0  # 0: same as clip_eps
    c.rl.kl_coef = 0.0  # k3 KL to the frozen base (adapters off)
    c.rl.measure_kl = True  # report that KL even when kl_coef is 0 (one more forward pass per update)
    c.rl.format_penalty = -1.0  # reward of a format failure (correct 1, wrong 0)
    c.rl.update_epochs = 1
    c.rl.rows = 8  # rows per update batch (packed)
    c.rl.seq_len = 1024
    c.rl.learning_rate = 1e-3
    c.rl.eval_every = 5  # iterations between greedy evaluations on tasks.eval (and at the start and end)
    return c
