"""Per-sample advantages from rewards and groups (host side, numpy).

The caller groups samples per (role, task): `group_ids[i]` is any hashable key
of sample i's group. Estimators (ADVANTAGES, chosen by rl.advantage):

  grpo       A_i = (r_i - mean_g) / (std_g + eps), std over the group (ddof=0)
  rloo       A_i = r_i - mean of the other samples of its group = G/(G-1) (r_i - mean_g)
  reinforce  A_i = r_i - b, b a running mean of past batch means (b <- decay b + (1 - decay) mean r),
             initialised to the first batch's mean; state()/restore() carry b across checkpoints

grpo and rloo need a baseline from the group itself, so a group of one sample
is an error (or, with singletons='mask', masked). A grpo/rloo group whose
rewards are all equal carries no signal: its advantages are exactly 0 and it is
reported masked. The caller then gives its tokens loss mask 0, which removes
them from the objective and from the KL term alike (the objective reads the
loss mask only). `zero_adv_frac` is the fraction of groups masked. reinforce
masks nothing: its baseline does not come from the group, so an all-equal
group (or a lone sample) still differs from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable, Optional, Sequence

import numpy as np

SINGLETONS = ("error", "mask")


@dataclasses.dataclass(frozen=True)
class GroupAdvantages:
    advantages: np.ndarray  # float32[n], exactly 0 where masked
    masked: np.ndarray  # bool[n]: the sample's group carries no signal (train none of its tokens)
    groups: int
    zero_adv_frac: float  # masked groups / groups

    def report(self) -> dict[str, float]:
        """Scalars for metrics."""
        return {"zero_adv_frac": self.zero_adv_frac, "groups": float(self.groups)}


def _check(rewards, group_ids) -> tuple[np.ndarray, np.ndarray, list]:
    """(rewards float64[n], group index int[n] in first-appearance order, the group keys in that order)."""
    r = np.asarray(rewards, np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-D array, found shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError(f"rewards hold a non-finite value at sample {int(np.argmax(~np.isfinite(r)))}")
    keys = list(group_ids)
    if len(keys) != r.size:
        raise ValueError(f"{r.size} rewards but {len(keys)} group ids; give one group id per sample")
    index: dict[Hashable, int] = {}
    g = np.asarray([index.setdefault(k, len(index)) for k in keys], np.int64)
    return r, g, list(index)


class _GroupEstimator:
    """grpo and rloo: a baseline from each group's own samples."""

    name = ""

    def __init__(self, *, eps: float = 1e-6, singletons: str = "error"):
        if singletons not in SINGLETONS:
            raise ValueError(f"singletons is {singletons!r}; choose from {', '.join(SINGLETONS)}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, found {eps}")
        self.eps = eps
        self.singletons = singletons

    def _group_advantages(self, r_g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, rewards: Sequence[float], group_ids: Sequence[Hashable]) -> GroupAdvantages:
        r, g, keys = _check(rewards, group_ids)
        n_groups = len(keys)
        advantages = np.zeros(r.shape, np.float64)
        masked = np.zeros(r.shape, bool)
        n_masked = 0
        for j in range(n_groups):
            members = g == j
            r_g = r[members]
            if r_g.size == 1 and self.singletons == "error":
                raise ValueError(
                    f"rollout.group_size must be >= 2 for {self.name}: group {keys[j]!r} has 1 sample, which has no "
                    f"group baseline; sample each task at least twice or use rl.advantage='reinforce'")
            if np.all(r_g == r_g[0]):
                masked[members] = True
                n_masked += 1
                continue
            advantages[members] = self._group_advantages(r_g)
        return GroupAdvantages(advantages.astype(np.float32), masked, n_groups, n_masked / n_groups)

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name} advantages keep no state, found {state}")


class Grpo(_GroupEstimator):
    name = "grpo"

    def _group_advantages(self, r_g):
        return (r_g - r_g.mean()) / (r_g.std() + self.eps)


class Rloo(_GroupEstimator):
    name = "rloo"

    def _group_advantages(self, r_g):
        others_mean = (r_g.sum() - r_g) / (r_g.size - 1)
        return r_g - others_mean


class Reinforce:
    """A running-mean baseline over batches; groups are accepted (and checked) but not used."""

    name = "reinforce"

    def __init__(self, *, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the reinforce baseline decay must be in [0, 1), found {decay}")
        self.decay = decay
        self.baseline: Optional[float] = None

    def __call__(self, rewards: Sequence[float], group_ids: Sequence[Hashable]) -> GroupAdvantages:
        r, _, keys = _check(rewards, group_ids)
        mean = float(r.mean())
        baseline = mean if self.baseline is None else self.baseline
        self.baseline = self.decay * baseline + (1.0 - self.decay) * mean
        return GroupAdvantages((r - baseline).astype(np.float32), np.zeros(r.shape, bool), len(keys), 0.0)

    def state(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "decay": self.decay}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("decay", self.decay) != self.decay:
            raise ValueError(f"the saved reinforce baseline used decay {state['decay']}; this run uses {self.decay}")
        self.baseline = None if state.get("baseline") is None else float(state["baseline"])


ADVANTAGES = {"grpo": Grpo, "rloo": Rloo, "reinforce": Reinforce}
GROUP_BASELINES = ("grpo", "rloo")


def make_advantage(name: str, *, group_size: Optional[int] = None, **options):
    """The estimator named `name` (rl.advantage), built with `options` (eps, singletons; decay for reinforce).

    `group_size` (rl's samples per task) is checked here, before any rollout: grpo and rloo need >= 2.
    """
    if name not in ADVANTAGES:
        raise ValueError(f"rl.advantage is {name!r}; choose from {', '.join(ADVANTAGES)}")
    if group_size is not None and name in GROUP_BASELINES and group_size < 2:
        raise ValueError(f"rollout.group_size must be >= 2 for {name} (found {group_size}): its baseline comes from "
                         "the other samples of a task; raise it or use rl.advantage='reinforce'")
    return ADVANTAGES[name](**options)
