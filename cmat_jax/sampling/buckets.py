"""Shape buckets: round batch sizes and lengths up so that a long run of calls
with varied prompts compiles only a handful of programs."""

from __future__ import annotations

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
