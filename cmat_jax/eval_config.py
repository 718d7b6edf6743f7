"""The evaluation settings: every field `python -m cmat_jax.evaluate` reads, its default, and what is refused.

configs/eval_dbbench.py starts from `default_config()`; any field can be set on
the command line (`--config.reflection.trials=3`). `resolve(config)` checks a
config and returns the typed `EvalSettings` the evaluation runs with
(cmat_jax/settings/evaluation.py, where the checks live). Every field changes
the computation or is refused: a field that the chosen agent, model source or
variant would ignore must keep its default, and a combination that cannot run
(a learned Checker or reflections without a model, an ablation whose variants
would coincide) fails with one line that says what to change.

Defaults that depend on the agent or the model source (0 or '' below) are
resolved here, once, and recorded in metrics.json. A random preset shows that
the pipeline runs, not a score (its replies are noise), so it gets demo sizes
that keep a 2-core CPU run of every ablation to minutes:

    field                        oracle   model.preset   model.hf_dir / model.workdir
    reflection.trials            1        3              3
    reflection.max_new_tokens    -        32             128
    sampling.max_new_tokens      -        64             512
    instructions                 -        short          dbbench (a CMAT run's workdir: its rollout.instructions)
    sampling.max_len             -        the model's context

trials 3 is CMAT's setting (the Assistant retries a failed task twice, reading
its own reflections; set 1 for plain DBBench). 512 new tokens leave a real
model room to explain, as DBBench's instructions ask, and write its statement.
'short' instructions state DBBench's protocol in 71 instead of 446
bundled-tokenizer tokens (agents/prompts.py). Measured on two pinned cores of
a server CPU, the tiny preset's three ablation variants on the 60 dev tasks
take 34 s with these demo sizes, 56 s with DBBench's instructions, 58 s with
128-token reflections and 87 s with both (each reflection is shown again in
every later retry's prompt).
"""

from __future__ import annotations

from ml_collections import config_dict

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS
from cmat_jax.settings.evaluation import EvalSettings, parse_evaluation


def default_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.agent = "oracle"  # oracle (scripted, answers from the labels) | model (see c.model)
    c.tasks = DBBENCH_DEV_TASKS  # a DBBench .jsonl file; default: the 60 dev tasks shipped with the package
    c.max_tasks = 0  # 0: every task of the file; N: its first N
    c.workdir = "workdir/eval_dbbench"  # metrics.json, episodes.jsonl (and the ablation table and plot) go here
    # The Checker role that gates every SQL statement before it runs: off | static (sqlglot rules) |
    # learned (a model reads the task and the statement) | static+learned.
    c.checker = "static"
    # Also run the CMAT paper's Figure 3 variants on the same tasks and model: no reflection (trials=1)
    # and no Checker (checker=off), beside the configured one ('full').
    c.ablations = False
    # The opening instructions the Assistant reads (model agents): dbbench = DBBench v0.2's text verbatim;
    # short = agents.prompts.SHORT_INSTRUCTIONS (the same protocol in 71 instead of 446 bundled-tokenizer
    # tokens); '': short for a preset, a CMAT run's workdir its own rollout.instructions, else dbbench.
    c.instructions = ""

    c.reflection = config_dict.ConfigDict()
    c.reflection.trials = 0  # attempts per task (1 = no reflection); 0: 1 for the oracle, 3 for a model
    c.reflection.omega = 3  # reflections shown on a retry (the task's most recent ones)
    c.reflection.max_new_tokens = 0  # tokens per reflection; 0: 32 for a preset, 128 for a real model

    # agent=model: exactly one of hf_dir, workdir, preset.
    c.model = config_dict.ConfigDict()
    c.model.hf_dir = ""  # a local Hugging Face model directory (weights and tokenizer)
    c.model.workdir = ""  # a `python -m cmat_jax.train` run (SFT or CMAT): its base with its trained adapters
    c.model.step = 0  # model.workdir: the checkpoint step; 0 = the latest
    # A seeded random model of this preset's shape (e.g. tiny) with the bundled tokenizer, built by
    # training/build.py as `python -m cmat_jax.train` builds a random base, from model.seed and
    # model.init_std (defaults: configs/sft_tiny.py's seed and init_std).
    c.model.preset = ""
    c.model.seed = 0  # model.preset: the random init's seed
    c.model.init_std = 0.15  # model.preset: weight std of the random init (configs/sft_tiny.py's)
    c.model.dtype = "float32"  # hf_dir, preset: compute dtype (a workdir run keeps its own)
    c.model.param_dtype = "float32"  # hf_dir, preset: storage dtype of the weights

    # Greedy decoding for every model role.
    c.sampling = config_dict.ConfigDict()
    c.sampling.max_new_tokens = 0  # per Assistant reply; 0: 64 for a preset, 512 for a real model
    c.sampling.checker_max_new_tokens = 64  # per learned-Checker verdict
    c.sampling.max_len = 0  # prompt + new tokens per sampler row; 0: the model's context
    c.sampling.batch_size = 0  # rows per sampler pass; 0: every live episode in one pass
    c.sampling.unroll_decode_layers = False  # as rollout.unroll_decode_layers in a train config

    c.max_rounds = 15  # statements per episode (DBBench v0.2's setting)
    c.timeout_s = 2.0  # wall clock per statement
    c.max_output_chars = 800  # result text shown to the agent (DBBench truncates at 800)
    c.heap_limit_mib = 256  # SQLite heap cap, process-wide
    return c


def resolve(config: config_dict.ConfigDict) -> EvalSettings:
    """The EvalSettings of `config`, or a ValueError that names the field to change."""
    return parse_evaluation(_with_run_instructions(config), default_config())


def _with_run_instructions(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """A CMAT run's workdir with instructions '': the run's own rollout.instructions, the protocol its adapters
    learned (the embedded default's 'short' run answers DBBench's text with format failures only)."""
    if config.agent != "model" or not config.model.workdir or config.instructions:
        return config
    from cmat_jax.training.workdir import saved_config  # JAX, only for a workdir

    try:
        saved = saved_config(config.model.workdir)
    except (OSError, ValueError):  # loading the model reports it, with the fix
        return config
    instructions = saved.get("rollout", {}).get("instructions") if saved.get("mode") == "cmat" else None
    if not instructions:
        return config
    config = config.copy_and_resolve_references()
    config.instructions = instructions
    return config
