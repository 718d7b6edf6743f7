"""The evaluation settings: every field `python -m cmat_jax.evaluate` reads, its default, and what is refused.

configs/eval_dbbench.py starts from `default_config()`; any field can be set on
the command line (`--config.reflection.trials=3`). `resolve(config)` checks a
config and returns the `Settings` the evaluation runs with. Every field changes
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
    instructions                 -        short          dbbench
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

import dataclasses
from typing import Any, Optional

from ml_collections import config_dict

from cmat_jax.agents.checker_role import CHECKER_MODES
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS

AGENTS = ("model", "oracle")
MODEL_SOURCES = ("hf_dir", "workdir", "preset")
INSTRUCTIONS = ("dbbench", "short", "")

MODEL_TRIALS = 3  # reflection.trials=0 with a model
# Resolved defaults: (model.preset, model.hf_dir or model.workdir); see the module docstring.
MAX_NEW_TOKENS = (64, 512)  # sampling.max_new_tokens=0
REFLECTION_MAX_NEW_TOKENS = (32, 128)  # reflection.max_new_tokens=0
INSTRUCTIONS_DEFAULT = ("short", "dbbench")  # instructions=''


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
    # tokens); '': short for a preset, dbbench for a real model.
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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One evaluated setting: its name in metrics.json and tables, trials and Checker mode."""

    name: str
    trials: int
    checker: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """A checked config with its agent- and source-dependent defaults resolved."""

    agent: str
    source: Optional[str]  # hf_dir | workdir | preset (None for the oracle)
    variants: tuple[Variant, ...]  # the configured one first ('full')
    # Model agents only (0 / None for the oracle):
    max_new_tokens: int = 0  # per Assistant reply
    reflection_max_new_tokens: int = 0
    instructions: Optional[str] = None  # dbbench | short

    @property
    def needs_learned_checker(self) -> bool:
        return any("learned" in v.checker for v in self.variants)


def resolve(config: config_dict.ConfigDict) -> Settings:
    """The Settings of `config`, or a ValueError that names the field to change."""
    defaults = default_config()
    if config.agent not in AGENTS:
        raise ValueError(f"config.agent is {config.agent!r}; registered agents: {', '.join(AGENTS)}")
    if not config.tasks:
        raise ValueError("config.tasks is empty; pass --config.tasks=<path to a DBBench .jsonl file>")
    if not isinstance(config.max_tasks, int) or config.max_tasks < 0:
        raise ValueError(f"config.max_tasks must be an int >= 0 (0: every task), found {config.max_tasks!r}")
    if config.checker not in CHECKER_MODES:
        raise ValueError(f"config.checker is {config.checker!r}; choose from {', '.join(CHECKER_MODES)}")
    if config.instructions not in INSTRUCTIONS:
        raise ValueError(f"config.instructions is {config.instructions!r}; choose from {', '.join(INSTRUCTIONS)}")
    trials = config.reflection.trials
    if not isinstance(trials, int) or trials < 0:
        raise ValueError(f"reflection.trials must be an int >= 1 (0: the agent's default), found {trials!r}")

    if config.agent == "oracle":
        source = None
        _refuse_changed(config, defaults, "the oracle agent runs no model (use --config.agent=model)",
                        ["model." + k for k in defaults.model] + ["sampling." + k for k in defaults.sampling]
                        + ["instructions", "reflection.max_new_tokens"])
        if trials > 1:
            raise ValueError(f"reflection.trials={trials} needs a model to write reflections; the oracle cannot: "
                             "use --config.agent=model, or reflection.trials=1")
        if "learned" in config.checker:
            raise ValueError(f"checker={config.checker!r} needs a model for the Checker role; with the oracle use "
                             "--config.checker=static or off")
        trials = trials or 1
        sizes = {}
    else:
        source = _model_source(config, defaults)
        trials = trials or MODEL_TRIALS
        for field, value in [("sampling." + k, config.sampling[k]) for k in defaults.sampling] + [
                ("reflection.max_new_tokens", config.reflection.max_new_tokens)]:
            smallest = 1 if field == "sampling.checker_max_new_tokens" else 0
            if not isinstance(value, int) or value < smallest:
                raise ValueError(f"{field} must be an int >= {smallest} (0: see its comment), found {value!r}")
        real = int(source != "preset")
        sizes = dict(max_new_tokens=config.sampling.max_new_tokens or MAX_NEW_TOKENS[real],
                     reflection_max_new_tokens=config.reflection.max_new_tokens or REFLECTION_MAX_NEW_TOKENS[real],
                     instructions=config.instructions or INSTRUCTIONS_DEFAULT[real])
    if not isinstance(config.reflection.omega, int) or config.reflection.omega < 1:
        raise ValueError(f"reflection.omega must be a positive int, found {config.reflection.omega!r}")

    variants = [Variant("full", trials, config.checker)]
    if config.ablations:
        if trials == 1:
            raise ValueError("ablations compare reflection with none, but reflection.trials is 1, so the "
                             "'no reflection' variant would repeat the configured one; set "
                             "--config.reflection.trials=N (N >= 2; it needs --config.agent=model)")
        if config.checker == "off":
            raise ValueError("ablations compare the Checker with none, but config.checker is 'off', so the "
                             "'no Checker' variant would repeat the configured one; set --config.checker=static "
                             "(or learned, static+learned)")
        variants += [Variant("no_reflection", 1, config.checker), Variant("no_checker", trials, "off")]
    if not any(v.trials > 1 for v in variants):
        _refuse_changed(config, defaults, "no variant writes reflections (reflection.trials is 1)",
                        ["reflection.omega", "reflection.max_new_tokens"])
    if not any("learned" in v.checker for v in variants):
        _refuse_changed(config, defaults, f"no variant has a learned Checker (checker={config.checker!r})",
                        ["sampling.checker_max_new_tokens"])
    return Settings(config.agent, source, tuple(variants), **sizes)


def _model_source(config: config_dict.ConfigDict, defaults: config_dict.ConfigDict) -> str:
    m = config.model
    chosen = [s for s in MODEL_SOURCES if m[s]]
    if len(chosen) != 1:
        found = ", ".join(f"model.{s}={m[s]!r}" for s in chosen) or "none"
        raise ValueError("--config.agent=model needs exactly one of --config.model.hf_dir=DIR (a local Hugging Face "
                         "model), --config.model.workdir=W (a trained run) or --config.model.preset=tiny (a seeded "
                         f"random model); found {found}")
    source = chosen[0]
    only = {"step": ("workdir",), "seed": ("preset",), "init_std": ("preset",), "dtype": ("hf_dir", "preset"),
            "param_dtype": ("hf_dir", "preset")}
    for field, sources in only.items():
        if source not in sources:
            _refuse_changed(config, defaults, f"it applies only with model.{' or model.'.join(sources)}, and "
                            f"model.{source} is the model", [f"model.{field}"])
    if not isinstance(m.step, int) or m.step < 0:
        raise ValueError(f"model.step must be an int >= 0 (0: the latest checkpoint), found {m.step!r}")
    return source


def _get(config: config_dict.ConfigDict, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _refuse_changed(config, defaults, why: str, fields: list[str]) -> None:
    """Fields that would be ignored must keep their defaults."""
    for field in fields:
        value, default = _get(config, field), _get(defaults, field)
        if value != default:
            raise ValueError(f"config.{field}={value!r} would be ignored: {why}; leave it at its default {default!r}")
