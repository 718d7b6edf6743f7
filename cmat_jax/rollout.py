"""The one place a rollout engine is wired: `build_rollout_engine(settings, ...)` turns `EngineSettings`
(cmat_jax/settings/rollout.py) and the roles' reply sources into a `RolloutEngine` with its environment
and sampling settings. The CMAT loop (its training and evaluation engines), `python -m cmat_jax.evaluate`
(one engine per variant) and bench/bench_rollout.py build their engines here.

`longest_opening` measures the prompt every episode of a task starts with (the ids the engine sends
first), for the length checks a run makes before it builds its model.

It sits between agents/ (the engine) and rl/: it may import agents, envs and settings, and nothing above.
"""

from __future__ import annotations

from typing import Sequence

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.user import User
from cmat_jax.data.tokenizer import render_chat, tokenize_text
from cmat_jax.envs.sql.database import Limits
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig, SqlEnvironments
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.settings.rollout import EngineSettings


def build_rollout_engine(settings: EngineSettings, *, assistant, tokenizer=None, checker=None,
                         reflector=None) -> RolloutEngine:
    """The engine of `settings` with these reply sources: `assistant` plays the Assistant, `checker` the
    learned Checker (used only when settings.checker is a learned mode) and `reflector` writes the
    reflections (used only with settings.trials > 1). A tokenizer is needed for model reply sources."""
    config = RolloutConfig(
        assistant=settings.assistant, checker_sampling=settings.checker_sampling, reflection=settings.reflection,
        trials=settings.trials, checker=settings.checker, prompt_budget=settings.prompt_budget, cache=settings.cache,
        slots=settings.slots)
    limits = Limits(timeout_s=settings.timeout_s, max_output_chars=settings.max_output_chars,
                    heap_limit_bytes=settings.heap_limit_mib << 20)
    environments = SqlEnvironments(SqlEnvConfig(max_rounds=settings.max_rounds, limits=limits))
    return RolloutEngine(environments, config, assistant=assistant, tokenizer=tokenizer,
                         checker_model=checker if settings.learned_checker else None,
                         reflector=reflector if settings.trials > 1 else None, max_len=settings.max_len)


def longest_opening(tasks: Sequence[SqlTask], user: User, tokenizer) -> int:
    """The most token ids any of `tasks` opens an episode with: the engine's first Assistant prompt (the
    User's opening turns rendered by the chat template, ready for the reply)."""
    env = SqlEnv(SqlEnvConfig(checker="off"))
    try:
        return max(len(tokenize_text(tokenizer, render_chat(tokenizer, user.opening(env.reset(task)),
                                                            add_generation_prompt=True))) for task in tasks)
    finally:
        env.close()
