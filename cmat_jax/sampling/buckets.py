"""Shape buckets: round batch sizes and lengths up so that a long run of calls
with varied prompts compiles only a handful of programs.

`Buckets` is a sampler's set (`Sampler.buckets`, from its SamplerConfig): the
batch, prompt-length and new-token buckets that select its programs' shapes.
The slots (slots.py) size their rows and blocks with the same one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence


def next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def next_half_power_of_two(n: int) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5 times them) that is >= n."""
    power = next_power_of_two(n)
    return power * 3 // 4 if power >= 4 and power * 3 // 4 >= n else power


def check_buckets(buckets: Optional[Sequence[int]], name: str) -> Optional[tuple[int, ...]]:
    """Validates a configured bucket list; returns it sorted (None = powers of two)."""
    if buckets is None:
        return None
    out = tuple(sorted(set(buckets)))
    if not out or any(not isinstance(b, int) or b <= 0 for b in out):
        raise ValueError(
            f"{name} must be a non-empty list of positive ints (or None for powers of two), got {buckets!r}"
        )
    return out


def pick_bucket(n: int, buckets: Optional[tuple[int, ...]], *, minimum: int, name: str) -> int:
    """The smallest bucket >= n: from `buckets`, or the next power of two (at least `minimum`)."""
    if buckets is None:
        return max(minimum, next_power_of_two(n))
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(
        f"{name} {n} is larger than the largest configured bucket {buckets[-1]} (buckets: {list(buckets)}); "
        f"add a bucket >= {n} to the sampler config, or set it to None for powers of two"
    )


@dataclasses.dataclass(frozen=True)
class Buckets:
    """A sampler's shape buckets. A list left None means powers of two (at least the matching minimum)."""

    batch_sizes: Optional[Sequence[int]] = None
    prompt_lengths: Optional[Sequence[int]] = None
    new_token_counts: Optional[Sequence[int]] = None
    min_prompt_length: int = 16
    min_new_tokens: int = 16

    def __post_init__(self):
        for name in ("batch_sizes", "prompt_lengths", "new_token_counts"):
            object.__setattr__(self, name, check_buckets(getattr(self, name), name))

    @property
    def largest_batch(self) -> Optional[int]:
        """The largest configured batch bucket (None for powers of two: no limit)."""
        return self.batch_sizes[-1] if self.batch_sizes else None

    def batch(self, n: int, *, name: str = "batch size") -> int:
        return pick_bucket(n, self.batch_sizes, minimum=1, name=name)

    def prompt(self, n: int) -> int:
        return pick_bucket(n, self.prompt_lengths, minimum=self.min_prompt_length, name="prompt length")

    def new_tokens(self, n: int) -> int:
        return pick_bucket(n, self.new_token_counts, minimum=self.min_new_tokens, name="max_new_tokens")

    def check(self, longest_prompt: int, max_new_tokens: int) -> None:
        """Refuses a prompt length or max_new_tokens above the largest configured bucket."""
        pick_bucket(longest_prompt, self.prompt_lengths, minimum=1, name="prompt length")
        pick_bucket(max_new_tokens, self.new_token_counts, minimum=1, name="max_new_tokens")
