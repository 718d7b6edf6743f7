"""The settings of `python -m cmat_jax.evaluate`: `parse_evaluation(config, defaults)` checks an evaluation
ConfigDict (fields and defaults: cmat_jax/eval_config.py) and returns `EvalSettings`, with the defaults
that depend on the agent and the model source resolved.

Every field changes the computation or is refused: a field that the chosen agent, model source or variant
would ignore must keep its default, and a combination that cannot run (a learned Checker or reflections
without a model, an ablation whose variants would coincide) fails with one line that says what to change.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from cmat_jax.models.config import preset as model_preset
from cmat_jax.settings.fields import SettingError, choice, flag, integer, number
from cmat_jax.settings.model import DTYPE_NAMES
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.settings.rollout import CHECKER_MODES, EngineSettings

AGENTS = ("model", "oracle")
MODEL_SOURCES = ("hf_dir", "workdir", "preset")
INSTRUCTIONS = ("dbbench", "short", "")
MODEL_TRIALS = 3  # reflection.trials=0 with a model
# Resolved defaults: (model.preset, model.hf_dir or model.workdir); see cmat_jax/eval_config.py.
MAX_NEW_TOKENS = (64, 512)  # sampling.max_new_tokens=0
REFLECTION_MAX_NEW_TOKENS = (32, 128)  # reflection.max_new_tokens=0
INSTRUCTIONS_DEFAULT = ("short", "dbbench")  # instructions=''
# model.* fields that only some model sources read.
SOURCE_FIELDS = {"step": ("workdir",), "seed": ("preset",), "init_std": ("preset",), "dtype": ("hf_dir", "preset"),
                 "param_dtype": ("hf_dir", "preset")}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One evaluated setting: its name in metrics.json and tables, trials and Checker mode."""

    name: str
    trials: int
    checker: str


@dataclasses.dataclass(frozen=True)
class EvalModel:
    """model.*: where a model agent's weights come from (`source`), and that source's fields."""

    source: str  # hf_dir | workdir | preset
    hf_dir: str
    workdir: str
    step: int  # model.workdir's checkpoint; 0: the latest
    preset: str
    seed: int
    init_std: float
    dtype: str
    param_dtype: str


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """A checked evaluation config with its agent- and source-dependent defaults resolved."""

    agent: str
    tasks: str
    max_tasks: int  # 0: every task
    workdir: str
    variants: tuple[Variant, ...]  # the configured one first ('full')
    omega: int  # reflections shown on a retry
    max_rounds: int
    timeout_s: float
    max_output_chars: int
    heap_limit_mib: int
    # Model agents only (None / 0 for the oracle):
    model: Optional[EvalModel] = None
    max_new_tokens: int = 0  # per Assistant reply
    reflection_max_new_tokens: int = 0
    instructions: Optional[str] = None  # dbbench | short
    checker_max_new_tokens: int = 0
    max_len: int = 0  # sampler context; 0: the model's
    batch_size: int = 0  # rows per sampler pass; 0: all at once
    unroll_decode_layers: bool = False

    @property
    def source(self) -> Optional[str]:
        return self.model.source if self.model is not None else None

    @property
    def needs_learned_checker(self) -> bool:
        return any("learned" in v.checker for v in self.variants)

    def engine(self, variant: Variant, max_len: Optional[int]) -> EngineSettings:
        """The greedy rollout engine of `variant`; `max_len` is the sampler's context (None: the oracle's)."""
        return EngineSettings(
            assistant=SamplingPolicy(self.max_new_tokens or 1, 0.0),  # the oracle samples nothing
            checker_sampling=SamplingPolicy(self.checker_max_new_tokens, 0.0),
            reflection=SamplingPolicy(self.reflection_max_new_tokens or 1, 0.0), trials=variant.trials,
            checker=variant.checker, max_rounds=self.max_rounds, timeout_s=self.timeout_s,
            max_output_chars=self.max_output_chars, heap_limit_mib=self.heap_limit_mib, max_len=max_len)


def parse_evaluation(config, defaults) -> EvalSettings:
    """The EvalSettings of `config` (`defaults`: eval_config.default_config()), or a SettingError that names
    the field to change."""
    trials = _check_common(config)
    if config.agent == "oracle":
        model, sizes = None, {}
        trials = _oracle_trials(config, defaults, trials)
    else:
        model = _model(config, defaults)
        trials, sizes = trials or MODEL_TRIALS, _model_sizes(config, defaults, model.source)
    variants = _variants(config, defaults, trials)
    return EvalSettings(agent=config.agent, tasks=os.path.abspath(config.tasks), max_tasks=config.max_tasks,
                        workdir=config.workdir, variants=variants, omega=config.reflection.omega,
                        max_rounds=integer("max_rounds", config.max_rounds, 1, "statements per episode"),
                        timeout_s=number("timeout_s", config.timeout_s, low=0.0, low_open=True),
                        max_output_chars=integer("max_output_chars", config.max_output_chars, 1),
                        heap_limit_mib=integer("heap_limit_mib", config.heap_limit_mib, 1), model=model,
                        checker_max_new_tokens=config.sampling.checker_max_new_tokens, **sizes)


def _check_common(config) -> int:
    """Checks what every agent reads; returns reflection.trials (0: the agent's default)."""
    if config.agent not in AGENTS:
        raise SettingError(f"config.agent is {config.agent!r}; registered agents: {', '.join(AGENTS)}")
    if not config.tasks:
        raise SettingError("config.tasks is empty; pass --config.tasks=<path to a DBBench .jsonl file>")
    if not isinstance(config.max_tasks, int) or config.max_tasks < 0:
        raise SettingError(f"config.max_tasks must be an int >= 0 (0: every task), found {config.max_tasks!r}")
    if not config.workdir:
        raise SettingError("config.workdir is empty; set --config.workdir=DIR, where metrics.json goes")
    if config.checker not in CHECKER_MODES:
        raise SettingError(f"config.checker is {config.checker!r}; choose from {', '.join(CHECKER_MODES)}")
    if config.instructions not in INSTRUCTIONS:
        raise SettingError(f"config.instructions is {config.instructions!r}; choose from "
                           f"{', '.join(INSTRUCTIONS)}")
    trials = config.reflection.trials
    if not isinstance(trials, int) or trials < 0:
        raise SettingError(f"reflection.trials must be an int >= 1 (0: the agent's default), found {trials!r}")
    if not isinstance(config.reflection.omega, int) or config.reflection.omega < 1:
        raise SettingError(f"reflection.omega must be a positive int, found {config.reflection.omega!r}")
    return trials


def _oracle_trials(config, defaults, trials: int) -> int:
    _refuse_changed(config, defaults, "the oracle agent runs no model (use --config.agent=model)",
                    ["model." + k for k in defaults.model] + ["sampling." + k for k in defaults.sampling]
                    + ["instructions", "reflection.max_new_tokens"])
    if trials > 1:
        raise SettingError(f"reflection.trials={trials} needs a model to write reflections; the oracle cannot: "
                           "use --config.agent=model, or reflection.trials=1")
    if "learned" in config.checker:
        raise SettingError(f"checker={config.checker!r} needs a model for the Checker role; with the oracle use "
                           "--config.checker=static or off")
    return trials or 1


def _model(config, defaults) -> EvalModel:
    m = config.model
    chosen = [s for s in MODEL_SOURCES if m[s]]
    if len(chosen) != 1:
        found = ", ".join(f"model.{s}={m[s]!r}" for s in chosen) or "none"
        raise SettingError("--config.agent=model needs exactly one of --config.model.hf_dir=DIR (a local Hugging "
                           "Face model), --config.model.workdir=W (a trained run) or --config.model.preset=tiny (a "
                           f"seeded random model); found {found}")
    source = chosen[0]
    for field, sources in SOURCE_FIELDS.items():
        if source not in sources:
            _refuse_changed(config, defaults, f"it applies only with model.{' or model.'.join(sources)}, and "
                            f"model.{source} is the model", [f"model.{field}"])
    if not isinstance(m.step, int) or m.step < 0:
        raise SettingError(f"model.step must be an int >= 0 (0: the latest checkpoint), found {m.step!r}")
    if source == "preset":
        try:
            model_preset(m.preset)
        except ValueError as e:
            raise SettingError(f"model.preset: {e}") from None
    return EvalModel(source, m.hf_dir, m.workdir, m.step, m.preset, integer("model.seed", m.seed),
                     number("model.init_std", m.init_std, low=0.0, low_open=True), choice("model.dtype", m.dtype,
                     DTYPE_NAMES), choice("model.param_dtype", m.param_dtype, DTYPE_NAMES))


def _model_sizes(config, defaults, source: str) -> dict[str, Any]:
    """The sampling fields of a model agent, with 0 / '' resolved for its source."""
    for field, value in [("sampling." + k, config.sampling[k]) for k in defaults.sampling
                         if k != "unroll_decode_layers"] + [("reflection.max_new_tokens",
                                                            config.reflection.max_new_tokens)]:
        smallest = 1 if field == "sampling.checker_max_new_tokens" else 0
        if not isinstance(value, int) or value < smallest:
            raise SettingError(f"{field} must be an int >= {smallest} (0: see its comment), found {value!r}")
    real = int(source != "preset")
    s = config.sampling
    return dict(max_new_tokens=s.max_new_tokens or MAX_NEW_TOKENS[real],
                reflection_max_new_tokens=config.reflection.max_new_tokens or REFLECTION_MAX_NEW_TOKENS[real],
                instructions=config.instructions or INSTRUCTIONS_DEFAULT[real],
                max_len=s.max_len, batch_size=s.batch_size,
                unroll_decode_layers=flag("sampling.unroll_decode_layers", s.unroll_decode_layers))


def _variants(config, defaults, trials: int) -> tuple[Variant, ...]:
    variants = [Variant("full", trials, config.checker)]
    if config.ablations:
        if trials == 1:
            raise SettingError("ablations compare reflection with none, but reflection.trials is 1, so the "
                               "'no reflection' variant would repeat the configured one; set "
                               "--config.reflection.trials=N (N >= 2; it needs --config.agent=model)")
        if config.checker == "off":
            raise SettingError("ablations compare the Checker with none, but config.checker is 'off', so the "
                               "'no Checker' variant would repeat the configured one; set --config.checker=static "
                               "(or learned, static+learned)")
        variants += [Variant("no_reflection", 1, config.checker), Variant("no_checker", trials, "off")]
    if not any(v.trials > 1 for v in variants):
        _refuse_changed(config, defaults, "no variant writes reflections (reflection.trials is 1)",
                        ["reflection.omega", "reflection.max_new_tokens"])
    if not any("learned" in v.checker for v in variants):
        _refuse_changed(config, defaults, f"no variant has a learned Checker (checker={config.checker!r})",
                        ["sampling.checker_max_new_tokens"])
    return tuple(variants)


def _get(config, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _refuse_changed(config, defaults, why: str, fields: list[str]) -> None:
    """Fields that would be ignored must keep their defaults."""
    for field in fields:
        value, default = _get(config, field), _get(defaults, field)
        if value != default:
            raise SettingError(f"config.{field}={value!r} would be ignored: {why}; leave it at its default "
                               f"{default!r}")
