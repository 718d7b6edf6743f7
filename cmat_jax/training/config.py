"""The run configuration: every field a training run reads, with defaults.

configs/*.py start from `default_config()` (SFT) or `cmat_config()` (CMAT) and
override what they need; any field can then be set on the command line
(`--config.train.steps=100`). The entry point parses the config once into typed
settings (cmat_jax/settings/), which check every field before anything is built.
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
    c.model, c.lora = _model(), _lora()

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1  # -1: all remaining devices
    c.mesh.tensor = 1
    c.data, c.train = _data(), _train()

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


def _model() -> config_dict.ConfigDict:
    m = config_dict.ConfigDict()
    m.hf_dir = ""  # a local Hugging Face model directory to tune
    # Without hf_dir: a random base of the preset's shape, only if random_init is
    # true (the embedded demo, tests, speed measurements at real shapes).
    m.random_init = False
    m.preset = "tiny"
    m.init_std = 0.02  # weight std of the random base
    m.dtype = "float32"  # compute dtype
    m.param_dtype = "float32"  # storage dtype of the frozen base
    m.remat = "none"  # none | full | dots | dots_no_batch | save_linear
    m.attention_impl = "auto"  # auto | xla | cudnn
    m.decode_attention = "xla"  # xla | pallas: one-token decode steps (pallas reads the KV cache in place)
    return m


def _lora() -> config_dict.ConfigDict:
    lora = config_dict.ConfigDict()
    lora.rank = 16
    lora.alpha = 32.0
    lora.dropout = 0.0
    lora.targets = "q,k,v,o,gate,up,down"  # comma-separated names, or one regex such as "q|v"
    return lora


def _data() -> config_dict.ConfigDict:
    d = config_dict.ConfigDict()
    d.tokenizer = ""  # empty: model.hf_dir's tokenizer, or the bundled one
    d.agent = ""  # JSONL file or TFDS directory (tools/build_tfds.py)
    d.general = ""  # empty: agent data only
    d.agent_fraction = 1.0  # share of examples drawn from the agent data
    d.split = "train"  # TFDS split
    d.batch_size = 8
    d.seq_len = 512
    d.mode = "packed"  # packed | bucketed
    d.bucket_lengths = config_dict.placeholder(tuple)  # bucketed mode; None: powers of two
    d.overlong = "truncate"  # truncate | drop
    d.seed = 0
    return d


def _train() -> config_dict.ConfigDict:
    t = config_dict.ConfigDict()
    t.steps = 150
    t.learning_rate = 3e-3
    t.warmup_steps = 10
    t.decay = "cosine"  # cosine | linear | constant
    t.end_lr_ratio = 0.1
    t.weight_decay = 0.0
    t.max_grad_norm = 1.0  # <= 0: no clipping
    t.b1 = 0.9
    t.b2 = 0.999
    t.eps = 1e-8
    t.microbatches = 1  # gradient accumulation: the batch runs in this many parts
    t.loss_chunk_size = 0  # sequence positions per cross-entropy chunk; 0: all at once
    t.adapter_dtype = "float32"  # adapters and their optimizer state
    t.nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does
    t.log_every = 1
    return t


def tinyagent_config(preset: str) -> config_dict.ConfigDict:
    """The shared recipe of the real-model configs (configs/sft_<preset>.py).

    bf16, 'save_linear' remat, LoRA rank 16 on every projection, a mixture with
    AgentTuning's 0.2 share of agent data, 16 x 4096-token batches; each config
    then sets what differs by model (microbatches, loss chunk, ...).
    """
    c = _tinyagent_model(default_config(), preset)
    c.workdir = f"workdir/sft_{preset}"
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


def _tinyagent_model(c: config_dict.ConfigDict, preset: str) -> config_dict.ConfigDict:
    """The real-model settings both recipes share: bf16 weights and compute, 'save_linear' remat (keeps each
    projection's output, recomputes the rest: docs/benchmarks.md), LoRA rank 16 on every projection."""
    c.model.preset = preset  # the shape, for --config.model.random_init=true speed runs
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "save_linear"
    c.lora.rank = 16
    c.lora.alpha = 32.0
    return c


def tinyagent_cmat_config(preset: str) -> config_dict.ConfigDict:
    """The shared CMAT recipe of the real-model configs (configs/cmat_<preset>.py): the model settings of
    `tinyagent_config`, a warm start on the oracle's episodes of generated DBBench-style tasks, then
    iterations of 16 tasks x 8 samples with reflection (2 trials) and the static Checker, evaluated on the
    DBBench dev tasks. Each config then sets what its model's memory decides (context, episodes at once,
    microbatches, loss chunk)."""
    from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS

    c = _tinyagent_model(cmat_config(), preset)
    c.workdir = f"workdir/cmat_{preset}"
    # No dropout: the sampler runs without it, so dropout in the update would move PPO's ratio off 1 before
    # any step has changed the policy.
    c.lora.dropout = 0.0

    c.tasks.generator_profile = "dbbench"  # every DBBench task type, Wikipedia-style tables
    c.tasks.train_count = 4000
    c.tasks.eval = DBBENCH_DEV_TASKS  # evaluation and model selection only: never trained on

    # SFT warm start on the oracle's episodes: 300 steps of 16 x 2048 tokens see each task about 5 times
    # (about 480 tokens per episode, as configs/cmat_smollm2_135m.py measured).
    c.train.steps = 300
    c.train.learning_rate = 2e-4  # tinyagent_config's LoRA SFT rate
    c.train.warmup_steps = 20
    c.train.log_every = 10
    c.data.batch_size = 16
    c.data.seq_len = 2048

    # The iteration bench/bench_iteration.py measures: 16 tasks x 8 samples, reflection on, the static Checker.
    c.rollout.tasks_per_iteration = 16
    c.rollout.group_size = 8
    c.rollout.max_new_tokens = 128  # a thought and one statement; the SmolLM2 recipe's measured length
    c.rollout.temperature = 0.7
    c.reflection.trials = 2
    c.checker.mode = "static"

    c.rl.iterations = 30
    c.rl.objective = "ppo"
    c.rl.advantage = "grpo"
    c.rl.learning_rate = 2e-5  # a tenth of the warm start's: keeps the policy ratio inside PPO's clip range
    c.rl.rows = 16
    c.rl.eval_every = 5
    c.checkpoint.every = 10
    c.checkpoint.keep = 5  # the warm start's checkpoint stays for evaluation and branching
    return c


def cmat_config() -> config_dict.ConfigDict:
    """Every field a CMAT run reads (mode='cmat'): the SFT fields (model, LoRA, mesh, optimizer, checkpoints;
    `data` and `train.steps` describe the SFT warm start) plus tasks, rollouts, reflection, Checker and RL."""
    c = default_config()
    c.mode = "cmat"
    c.workdir = "workdir/cmat"
    c.train.steps = 0  # SFT warm-start steps on oracle trajectories of the training tasks (0: none)
    # Share of warm-start tasks played as recovery demonstrations: a typical mistaken first statement, its
    # error, then the gold statement (cmat_jax/demos/mistakes.py). 0: every demonstration is the gold run.
    c.train.recovery_fraction = 0.0
    # Share of warm-start tasks played as reflection demonstrations: a failed trial, a plan naming the mistake
    # (the reflection role's reply) and the retry shown that plan (cmat_jax/demos/reflections.py). 0: none.
    c.train.reflection_fraction = 0.0
    # data.agent stays empty: the warm start trains on the oracle episodes of tasks.train (data.general may mix in)

    c.tasks = config_dict.ConfigDict()
    # Training tasks: a DBBench-format JSONL file, or tasks made by the seeded generator
    # (cmat_jax/taskgen/generate.py) when empty.
    c.tasks.train = ""
    c.tasks.eval = ""  # held-out tasks for evaluation (JSONL, or generated when empty)
    c.tasks.generator_profile = "tiny"  # tiny | lookup | dbbench | hard (taskgen/profiles.py); a+b interleaves
    c.tasks.train_count = 256
    c.tasks.eval_count = 64
    c.tasks.train_seed = 0
    c.tasks.eval_seed = 1  # another seed: other tables and questions
    # The first demo_count training tasks become warm-start demonstrations; the others are reward-only (the
    # iterations roll them out, their oracle episode is never played). None: every training task.
    c.tasks.demo_count = config_dict.placeholder(int)
    c.rollout = _rollout()

    c.reflection = config_dict.ConfigDict()
    c.reflection.trials = 1  # 1: no reflection
    c.reflection.omega = 3
    c.reflection.max_new_tokens = 64

    c.checker = config_dict.ConfigDict()
    c.checker.mode = "static"  # off | static | learned | static+learned
    c.checker.train = False  # learned modes: train the Checker's own adapter (else it is the frozen base)
    c.checker.max_new_tokens = 32
    c.rl = _rl()
    return c


def _rollout() -> config_dict.ConfigDict:
    r = config_dict.ConfigDict()
    r.tasks_per_iteration = 8  # B
    r.group_size = 4  # G samples per task
    r.max_new_tokens = 64
    r.temperature = 1.0
    r.top_k = 0  # 0: off
    r.top_p = 1.0  # 1.0: off
    r.max_len = 1024  # sampler context: prompt + new tokens
    r.max_rounds = 15  # statements per episode (DBBench v0.2)
    r.instructions = "dbbench"  # dbbench (v0.2's text, verbatim) | short (the same protocol in 71 tokens)
    r.curriculum = True
    r.curriculum_boost = 3.0
    # A task's pass rate is the mean success rate of its last curriculum_window groups. frontier: its weight grows
    # with that rate's closeness to 0.5 (1 at 0 or 1, curriculum_boost at 0.5 and before it is played); else a task
    # whose pass rate is strictly between 0 and 1 is drawn curriculum_boost times as often (agents/user.py).
    r.curriculum_frontier = False
    r.curriculum_window = 1
    # Decode with the layers unrolled (static weight slices) rather than scanned: about 1.7x the rollout speed
    # of a 30-layer SmolLM2-135M on one H200 (docs/benchmarks.md), at the price of more device memory.
    r.unroll_decode_layers = False
    r.cache = "persistent"  # persistent: each episode's KV cache kept across turns | reprefill: all each turn
    # Episodes played at once (continuous batching: a finished episode's place goes to the next); 0: every
    # episode of a trial. The KV cache holds one row per episode at once, so this bounds rollout memory.
    r.slots = 0
    return r


def _rl() -> config_dict.ConfigDict:
    r = config_dict.ConfigDict()
    r.iterations = 20
    r.objective = "ppo"  # ppo | reinforce
    r.advantage = "grpo"  # grpo | rloo | reinforce
    r.positive_only = False  # negative advantages become 0: only samples that beat their baseline are reinforced
    # Leave samples whose advantage is 0 (with positive_only: all that did not beat their group) out of the
    # update's rows: no compute is spent on them, and the token mean runs over the reinforced samples alone.
    r.reinforced_only = False
    # A correct answer the database never showed (a guessed count, say; rl/grounding.py) earns 0, as a wrong one.
    r.grounded_reward = False
    # Added to a readable episode's reward, times the share of its statements that ran without error (0: off).
    r.statement_credit = 0.0
    r.clip_eps = 0.2
    r.clip_eps_high = 0.0  # 0: same as clip_eps
    r.kl_coef = 0.0  # k3 KL to the frozen base (adapters off)
    r.measure_kl = True  # report that KL even when kl_coef is 0 (one more forward pass per update)
    r.format_penalty = -1.0  # reward of a format failure (correct 1, wrong 0)
    r.update_epochs = 1
    r.rows = 8  # rows per update batch (packed)
    r.seq_len = 1024
    r.learning_rate = 1e-3
    r.eval_every = 5  # iterations between greedy evaluations on tasks.eval (and at the start and end)
    # After the iterations, continue SFT on the same demonstrations from the same warm start for the iterations'
    # training time (or rl.sft_twin_steps steps when > 0), and compare (cmat_jax/rl/sft_twin.py).
    r.sft_twin = False
    r.sft_twin_steps = 0
    # Dynamic sampling: play rounds of rollout.tasks_per_iteration new tasks until groups_per_update of them have
    # Assistant rewards that differ (at most max_sampling_rounds rounds); the update trains on those groups only
    # and the dropped ones are recorded (cmat_jax/rl/dynamic_sampling.py). 0: off, one round, every group.
    r.groups_per_update = 0
    r.max_sampling_rounds = 0
    return r
