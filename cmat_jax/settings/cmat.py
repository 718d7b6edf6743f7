"""What only a CMAT run reads: its task pools (tasks.*), the policy update (rl.*), and `CmatSettings`, which
holds them with the rollout, reflection and Checker settings and checks how they combine.

`CmatSettings.check_lengths` checks the two lengths that depend on the prompts the run builds (the
tokenizer's ids of each task's opening): it runs once the tokenizer and the tasks are loaded, before the
model is built. `TaskSettings.check_demo_count` holds tasks.demo_count to the training pool: a generated
pool's size is known when the settings are parsed, a task file's once rl/tasks.py has read it, still before
the model is built.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from cmat_jax.settings.fields import Section, SettingError, choice, flag, integer, number, text
from cmat_jax.settings.rollout import (CheckerSettings, EngineSettings, ReflectionSettings, RolloutSettings)
from cmat_jax.settings.training import WarmStartSettings

# Each name list is the registry of the module that uses it (tests/test_settings.py holds them equal).
GENERATOR_PROFILES = ("dbbench", "tiny", "lookup", "hard")  # taskgen/profiles.py PROFILES
OBJECTIVES = ("ppo", "reinforce")  # rl/objectives.py
ADVANTAGES = ("grpo", "rloo", "reinforce")  # rl/advantages.py
GROUP_BASELINES = ("grpo", "rloo")  # advantages whose baseline is the task's other samples


def _profiles(field: str, value) -> str:
    """A generator profile, or several joined by '+' (their tasks interleaved: taskgen/generate.py mixture)."""
    names = text(field, value).split("+")
    for name in names:
        if name not in GENERATOR_PROFILES:
            raise SettingError(f"{field} is {value!r}; choose from {', '.join(GENERATOR_PROFILES)}, or join "
                               "several with '+' (e.g. dbbench+hard: their tasks interleaved)")
    if len(set(names)) < len(names):
        raise SettingError(f"{field} is {value!r}, which names a profile twice; name each once")
    return value


@dataclasses.dataclass(frozen=True)
class TaskSettings(Section):
    """Training and held-out evaluation tasks: DBBench JSONL files, or the seeded generator's when empty; how
    many training tasks are warm-start demonstrations (the others are reward-only)."""

    SECTION = "tasks"
    train: str
    eval: str
    generator_profile: str
    train_count: int
    eval_count: int
    train_seed: int
    eval_seed: int
    demo_count: Optional[int]  # the first N training tasks are demonstrations; None: all of them

    def __post_init__(self):
        self.check("train", text)
        self.check("eval", text)
        self.check("generator_profile", _profiles)
        self.check("train_count", integer, 1, what="generated training tasks")
        self.check("eval_count", integer, 1, what="generated evaluation tasks")
        self.check("train_seed", integer)
        self.check("eval_seed", integer)
        if not self.train and not self.eval and self.train_seed == self.eval_seed:
            raise SettingError(f"tasks.train_seed and tasks.eval_seed are both {self.train_seed}: the generated "
                               "evaluation tasks would be the training tasks; give them different seeds")
        if self.demo_count is not None:
            self.check("demo_count", integer, 0, what="the training tasks that become warm-start demonstrations; "
                       "unset: all of them")
        if not self.train:  # a generated pool holds tasks.train_count tasks
            self.check_demo_count(self.train_count)

    def check_demo_count(self, pool_size: int) -> None:
        """Refuses more demonstrations than the training pool's `pool_size` tasks."""
        if self.demo_count is not None and self.demo_count > pool_size:
            larger = f"more tasks in {self.train}" if self.train else "tasks.train_count"
            raise SettingError(f"tasks.demo_count is {self.demo_count}, but the training pool holds {pool_size} "
                               f"tasks; choose at most {pool_size}, or a larger pool ({larger})")


@dataclasses.dataclass(frozen=True)
class RlSettings(Section):
    """The policy update: objective, advantage estimator, KL, rewards, update batches, evaluations."""

    SECTION = "rl"
    iterations: int
    objective: str
    advantage: str
    positive_only: bool
    reinforced_only: bool  # the update's rows hold only samples with a nonzero advantage
    grounded_reward: bool  # a success the database did not show earns a wrong answer's reward
    statement_credit: float  # reward per share of an episode's statements that ran without error
    clip_eps: float
    clip_eps_high: float  # 0: same as clip_eps
    kl_coef: float
    measure_kl: bool
    format_penalty: float
    update_epochs: int
    rows: int
    seq_len: int
    learning_rate: float
    eval_every: int
    sft_twin: bool  # after the iterations, more SFT from the same warm start, compared (rl/sft_twin.py)
    sft_twin_steps: int  # the twin's steps; 0: as long as the iterations' rollouts and updates took
    groups_per_update: int  # dynamic sampling: informative task groups per update; 0: off (rl/dynamic_sampling.py)
    max_sampling_rounds: int  # with groups_per_update: rounds of rollout.tasks_per_iteration tasks at most

    def __post_init__(self):
        self.check("iterations", integer, 0)
        self.check("objective", choice, OBJECTIVES)
        self.check("advantage", choice, ADVANTAGES)
        self.check("positive_only", flag)
        self.check("reinforced_only", flag)
        self.check("grounded_reward", flag)
        self.check("statement_credit", number, low=0.0, what="reward for an episode whose statements all ran "
                   "without error, scaled by their share; 0: off")
        self.check("clip_eps", number, low=0.0, high=1.0, low_open=True, high_open=True)
        self.check("clip_eps_high", number, low=0.0, what="0: same as rl.clip_eps")
        self.check("kl_coef", number, low=0.0)
        self.check("measure_kl", flag)
        self.check("format_penalty", number, what="the reward of a format failure")
        self.check("update_epochs", integer, 1, what="passes over each iteration's batches")
        self.check("rows", integer, 1, what="rows per update batch")
        self.check("seq_len", integer, 1, what="tokens per update row")
        self.check("learning_rate", number, low=0.0, low_open=True)
        self.check("eval_every", integer, 1, what="iterations between evaluations")
        self.check("sft_twin", flag)
        self.check("sft_twin_steps", integer, 0, what="the SFT twin's steps; 0: as long as the iterations took")
        if self.reinforced_only and self.kl_coef > 0:
            raise SettingError(f"rl.reinforced_only is true but rl.kl_coef is {self.kl_coef}: the KL penalty applies "
                               "to every sample, and reinforced_only leaves the unreinforced ones out; set "
                               "rl.kl_coef=0 or rl.reinforced_only=false")
        self._check_dynamic_sampling()
        if self.sft_twin and self.iterations == 0:
            raise SettingError("rl.sft_twin is true but rl.iterations is 0: the twin runs for as long as the "
                               "iterations took; set rl.iterations >= 1 or rl.sft_twin=false")
        if self.sft_twin_steps and not self.sft_twin:
            raise SettingError(f"rl.sft_twin_steps is {self.sft_twin_steps} but rl.sft_twin is false, so no twin "
                               "runs; set rl.sft_twin=true or leave rl.sft_twin_steps at 0")

    def _check_dynamic_sampling(self) -> None:
        self.check("groups_per_update", integer, 0, what="informative task groups per update; 0: off")
        self.check("max_sampling_rounds", integer, 0, what="rollout rounds an iteration may play; required with "
                   "rl.groups_per_update")
        if self.groups_per_update and not self.max_sampling_rounds:
            raise SettingError(f"rl.groups_per_update is {self.groups_per_update} but rl.max_sampling_rounds is 0; "
                               "bound the rollout rounds an iteration may play to fill it: set "
                               "rl.max_sampling_rounds >= 1")
        if self.max_sampling_rounds and not self.groups_per_update:
            raise SettingError(f"rl.max_sampling_rounds is {self.max_sampling_rounds} but rl.groups_per_update is 0, "
                               "so no round is added; set rl.groups_per_update >= 1 or leave rl.max_sampling_rounds "
                               "at 0")
        if self.groups_per_update and self.advantage not in GROUP_BASELINES:
            raise SettingError(f"rl.groups_per_update is {self.groups_per_update} but rl.advantage is "
                               f"{self.advantage!r}, whose baseline is not the group's, so no group lacks signal; use "
                               f"rl.advantage in {', '.join(GROUP_BASELINES)} or rl.groups_per_update=0")


@dataclasses.dataclass(frozen=True)
class CmatSettings:
    """Every CMAT-only setting; how they combine is checked here."""

    warm_start: WarmStartSettings
    tasks: TaskSettings
    rollout: RolloutSettings
    reflection: ReflectionSettings
    checker: CheckerSettings
    rl: RlSettings

    @classmethod
    def parse(cls, config) -> "CmatSettings":
        return cls(*(section.parse(config) for section in CMAT_SECTIONS))

    def __post_init__(self):
        if self.rl.advantage in GROUP_BASELINES and self.rollout.group_size < 2:
            raise SettingError(f"rollout.group_size must be >= 2 for {self.rl.advantage} (found "
                               f"{self.rollout.group_size}): its baseline comes from the other samples of a task; "
                               "raise it or use rl.advantage='reinforce'")
        rounds, tasks = self.rl.max_sampling_rounds, self.rollout.tasks_per_iteration
        if self.rl.groups_per_update > rounds * tasks:
            raise SettingError(f"rl.groups_per_update is {self.rl.groups_per_update}, but rl.max_sampling_rounds x "
                               f"rollout.tasks_per_iteration = {rounds} x {tasks} tasks give at most {rounds * tasks} "
                               f"groups; expected rl.groups_per_update <= {rounds * tasks}")

    def engine(self, temperature: float) -> EngineSettings:
        """The rollout engine at `temperature` (the Checker and the reflections sample as the Assistant does)."""
        assistant = self.rollout.sampling(temperature)
        return EngineSettings(
            assistant=assistant, trials=self.reflection.trials, checker=self.checker.mode, cache=self.rollout.cache,
            checker_sampling=dataclasses.replace(assistant, max_new_tokens=self.checker.max_new_tokens),
            reflection=dataclasses.replace(assistant, max_new_tokens=self.reflection.max_new_tokens),
            max_rounds=self.rollout.max_rounds, max_len=self.rollout.max_len, slots=self.rollout.slots or None)

    def check_lengths(self, train_opening: int, eval_opening: int) -> None:
        """Refuses lengths the tasks' prompts cannot run with: `train_opening` and `eval_opening` are the
        longest opening prompts (token ids) of the training and evaluation tasks."""
        rollout, longest = self.rollout, max(train_opening, eval_opening)
        if rollout.max_len < longest + rollout.max_new_tokens:
            which = "training" if train_opening >= eval_opening else "evaluation"
            raise SettingError(
                f"rollout.max_len is {rollout.max_len}, but the longest opening prompt of the {which} tasks has "
                f"{longest} tokens and a reply takes up to rollout.max_new_tokens={rollout.max_new_tokens}; expected "
                f"rollout.max_len >= {longest + rollout.max_new_tokens}")
        # The shortest episode of that task is its opening and a one-token reply; a row holds rl.seq_len + 1 ids.
        if self.rl.seq_len < train_opening:
            raise SettingError(
                f"rl.seq_len is {self.rl.seq_len}, but the shortest episode of the training task with the longest "
                f"opening prompt has {train_opening + 1} tokens (a {train_opening}-token prompt and a one-token "
                f"reply), more than a row's rl.seq_len + 1; expected rl.seq_len >= {train_opening}")


# The sections of CmatSettings, in its fields' order.
CMAT_SECTIONS = (WarmStartSettings, TaskSettings, RolloutSettings, ReflectionSettings, CheckerSettings, RlSettings)
