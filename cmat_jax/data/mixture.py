"""Which record the k-th example of an SFT stream is: an agent/general mixture, shuffled per epoch.

The stream is a pure function of its position k, so a run resumes from k
alone. With agent fraction r = p/q (an exact fraction), the first k draws hold
exactly floor(k*p/q) agent examples: draw k is an agent example when that
count steps up at k+1. So every prefix of the stream has the ratio to within
one example, with no random number involved. Each source is visited in a
permutation drawn from (seed, source, epoch of that source); when a source is
exhausted its next epoch starts with a fresh permutation.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

AGENT, GENERAL = 0, 1


class MixtureSchedule:
    """Maps stream position -> (source, record index) for one or two sources.

    `sizes` is (n_agent,) or (n_agent, n_general); `agent_fraction` is the share
    of draws taken from the agent source (1.0 with a single source).
    """

    def __init__(self, sizes: Sequence[int], agent_fraction: float = 1.0, seed: int = 0):
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) not in (1, 2):
            raise ValueError(f"expected one or two sources (agent, general), found {len(sizes)}")
        if not 0.0 <= agent_fraction <= 1.0:
            raise ValueError(f"agent_fraction is {agent_fraction}; expected a value in [0, 1]")
        if len(sizes) == 1 and agent_fraction != 1.0:
            raise ValueError(
                f"agent_fraction is {agent_fraction} but there is no general source; "
                f"give a general data set or set agent_fraction to 1.0"
            )
        self.sizes = sizes
        self.seed = int(seed)
        # An exact fraction makes the schedule identical on every machine.
        self.fraction = Fraction(agent_fraction).limit_denominator(1_000_000)
        shares = (self.fraction, 1 - self.fraction)
        for source, (n, share) in enumerate(zip(sizes, shares)):
            if share > 0 and n <= 0:
                name = ("agent", "general")[source]
                raise ValueError(f"the {name} source is empty but its share of the mixture is {float(share)}")
        self._shares = shares[: len(sizes)]
        self._permutation_cache: dict[int, tuple[int, np.ndarray]] = {}

    def agent_count(self, position: int) -> int:
        """How many of the first `position` draws come from the agent source."""
        return position * self.fraction.numerator // self.fraction.denominator

    def source_at(self, position: int) -> int:
        return AGENT if self.agent_count(position + 1) > self.agent_count(position) else GENERAL

    def locate(self, position: int) -> tuple[int, int]:
        """(source, record index) of draw `position`."""
        if position < 0:
            raise ValueError(f"stream position must be >= 0, found {position}")
        source = self.source_at(position)
        agent_draws = self.agent_count(position)
        drawn_before = agent_draws if source == AGENT else position - agent_draws
        epoch, offset = divmod(drawn_before, self.sizes[source])
        return source, int(self._permutation(source, epoch)[offset])

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        cached = self._permutation_cache.get(source)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, source, epoch])
            cached = (epoch, rng.permutation(self.sizes[source]))
            self._permutation_cache[source] = cached
        return cached[1]

    @property
    def examples_per_epoch(self) -> int:
        """Draws in one epoch of the stream: one pass over the agent set (or the general set at r = 0)."""
        if self.fraction > 0:
            return math.ceil(self.sizes[AGENT] / self.fraction)
        return self.sizes[GENERAL]

    @property
    def draws_to_cover_all(self) -> int:
        """Enough draws to visit every record of every source at least once."""
        return max(math.ceil(n / share) for n, share in zip(self.sizes, self._shares) if share > 0) + 1

    def describe(self) -> str:
        return f"sizes={list(self.sizes)} agent_fraction={self.fraction} seed={self.seed}"
