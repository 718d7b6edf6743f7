"""How episodes are played: rollout.*, reflection.*, checker.* of a CMAT run, and `EngineSettings`, the
settings of one rollout engine that a CMAT run, an evaluation and the rollout benchmark each derive.

`EngineSettings` is what `cmat_jax.rollout.build_rollout_engine` reads: the three roles' sampling
policies (sampling/policy.py), trials, the Checker mode, the KV cache mode and the environment's limits.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.settings.fields import Section, SettingError, choice, flag, integer, number

# Each name list is the registry of the module that uses it (tests/test_settings.py holds them equal).
CHECKER_MODES = ("off", "static", "learned", "static+learned")  # agents/engine.py
CACHE_MODES = ("persistent", "reprefill")  # agents/engine.py
INSTRUCTIONS = ("dbbench", "short")  # DBBench v0.2's text verbatim | agents/prompts.py SHORT_INSTRUCTIONS


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """One rollout engine: each role's sampling, trials per episode, the Checker, the KV cache, the
    environment (statements per episode and the database's limits) and the prompt room."""

    assistant: SamplingPolicy
    checker_sampling: SamplingPolicy
    reflection: SamplingPolicy
    trials: int = 1  # 1: no reflection
    checker: str = "static"
    cache: str = "persistent"
    max_rounds: int = 15
    timeout_s: float = 2.0  # per statement
    max_output_chars: int = 800
    heap_limit_mib: int = 256
    max_len: Optional[int] = None  # the sampler's context; the prompt budget is max_len - the reply's tokens
    slots: Optional[int] = None  # episodes played at once; None: every episode of a trial
    prompt_budget: Optional[int] = None  # prompt tokens, when not max_len - assistant.max_new_tokens

    @property
    def learned_checker(self) -> bool:
        return "learned" in self.checker


@dataclasses.dataclass(frozen=True)
class RolloutSettings(Section):
    """The training rollouts: B tasks x G samples per iteration, the Assistant's sampling, the sampler's
    context, the opening instructions, the curriculum, the KV cache and how many episodes play at once."""

    SECTION = "rollout"
    tasks_per_iteration: int  # B
    group_size: int  # G
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    max_len: int
    max_rounds: int
    instructions: str
    curriculum: bool
    curriculum_boost: float
    curriculum_frontier: bool  # weight by the pass rate's closeness to 0.5, not by "mixed outcomes"
    curriculum_window: int  # groups whose mean success rate is a task's pass rate
    unroll_decode_layers: bool
    cache: str
    slots: int  # episodes played at once; 0: every episode of a trial

    def __post_init__(self):
        self.check("tasks_per_iteration", integer, 1, what="tasks drawn per iteration")
        self.check("group_size", integer, 1, what="samples per task")
        self.check("max_new_tokens", integer, 1, what="tokens per Assistant reply")
        self.check("temperature", number, low=0.0, what="0: greedy")
        self.check("top_k", integer, 0, what="0: off")
        self.check("top_p", number, low=0.0, high=1.0, low_open=True, what="1.0: off")
        self.check("max_len", integer, 2, what="the sampler's context: prompt + new tokens")
        self.check("max_rounds", integer, 1, what="statements per episode")
        self.check("instructions", choice, INSTRUCTIONS)
        self.check("curriculum", flag)
        self.check("curriculum_boost", number, low=1.0, what="1: uniform")
        self.check("curriculum_frontier", flag)
        self.check("curriculum_window", integer, 1, what="a task's last groups whose mean success rate is its pass "
                   "rate")
        if not self.curriculum and self.curriculum_frontier:
            raise SettingError("rollout.curriculum_frontier is true but rollout.curriculum is false, so no curriculum "
                               "reads it; set rollout.curriculum=true or rollout.curriculum_frontier=false")
        if not self.curriculum and self.curriculum_window != 1:
            raise SettingError(f"rollout.curriculum_window is {self.curriculum_window} but rollout.curriculum is "
                               "false, so no curriculum reads it; set rollout.curriculum=true or leave "
                               "rollout.curriculum_window at 1")
        self.check("unroll_decode_layers", flag)
        self.check("cache", choice, CACHE_MODES)
        self.check("slots", integer, 0, what="episodes played at once; 0: every episode of a trial")
        if self.max_len <= self.max_new_tokens:
            raise SettingError(f"rollout.max_len is {self.max_len}, which leaves no room for a prompt beside "
                               f"rollout.max_new_tokens={self.max_new_tokens}; expected rollout.max_len > "
                               f"{self.max_new_tokens}")

    def sampling(self, temperature: float) -> SamplingPolicy:
        """The Assistant's sampling at `temperature` (the rollout's own, or 0 for greedy evaluation); the
        config's top_k 0 and top_p 1.0 mean off."""
        return SamplingPolicy(self.max_new_tokens, temperature, self.top_k or None,
                              self.top_p if self.top_p < 1.0 else None)


@dataclasses.dataclass(frozen=True)
class ReflectionSettings(Section):
    """Reflexion: trials per episode (1: none), reflections shown on a retry (omega), tokens per reflection."""

    SECTION = "reflection"
    trials: int
    omega: int
    max_new_tokens: int

    def __post_init__(self):
        self.check("trials", integer, 1, what="1: no reflection")
        self.check("omega", integer, 1, what="reflections shown on a retry")
        self.check("max_new_tokens", integer, 1, what="tokens per reflection")


@dataclasses.dataclass(frozen=True)
class CheckerSettings(Section):
    """The Checker role before every statement: static, learned (a model), both, or off."""

    SECTION = "checker"
    mode: str
    train: bool  # learned modes: train the Checker's own adapter (else it is the frozen base)
    max_new_tokens: int

    def __post_init__(self):
        self.check("mode", choice, CHECKER_MODES)
        self.check("train", flag)
        self.check("max_new_tokens", integer, 1, what="tokens per learned-Checker verdict")
        if self.train and "learned" not in self.mode:
            raise SettingError(f"checker.train is true but checker.mode is {self.mode!r}: there is no learned "
                               "Checker to train; use checker.mode='learned' or 'static+learned'")

    @property
    def learned(self) -> bool:
        return "learned" in self.mode
