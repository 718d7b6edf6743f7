"""Stop strings, checked on the host between chunks of on-device decode steps.

A row stops at the first token whose decoded prefix contains any stop string;
that token is the last one kept. Its text is cut right before the stop string.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

Detokenize = Callable[[Sequence[int]], str]


def as_detokenize(tokenizer) -> Optional[Detokenize]:
    """Accepts None, an object with `.decode(ids)` (e.g. a Hugging Face tokenizer),
    or a callable ids -> str."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "decode"):
        return lambda ids: tokenizer.decode(list(ids))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(
        f"tokenizer must be an object with .decode(ids) or a callable ids -> str, got {type(tokenizer).__name__}"
    )


def first_stop_start(text: str, stop_strings: Sequence[str]) -> Optional[int]:
    """Index in `text` where the earliest stop string begins, or None."""
    starts = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(starts) if starts else None


def find_stop(ids: Sequence[int], checked: int, stop_strings: Sequence[str],
              detokenize: Detokenize) -> Optional[tuple[int, int]]:
    """Searches tokens after the first `checked` (whose text held no stop string).

    Returns (n_tokens, cut) with n_tokens the length of the shortest prefix whose
    text contains a stop string, and cut the index where that stop string begins
    in the prefix's text; None when the whole of `ids` holds no stop string.
    """
    if len(ids) <= checked or first_stop_start(detokenize(ids), stop_strings) is None:
        return None
    for n in range(checked + 1, len(ids) + 1):
        cut = first_stop_start(detokenize(ids[:n]), stop_strings)
        if cut is not None:
            return n, cut
    raise AssertionError("unreachable: the full text held a stop string")


def find_new_stops(tokens_bg, done_b, length_b, eos_b, step, rows, checked, stop_at, stop_strings,
                   detokenize: Detokenize) -> np.ndarray:
    """The host check between decode chunks (device state read back: tokens, done, length, whether a row ended
    with EOS, the step). Records in `stop_at` (row -> find_stop's result) the rows [0, rows) whose new text
    holds a stop string, advances `checked` (per row: tokens known to hold none), and returns the mask of rows
    to mark finished on device."""
    stopped_b = np.zeros(done_b.shape, bool)
    for r in range(rows):
        if r in stop_at:
            stopped_b[r] = True
            continue
        count = int(length_b[r]) if done_b[r] else int(step)
        if done_b[r] and eos_b[r]:
            count -= 1  # the EOS token's text is not searched
        hit = find_stop(tokens_bg[r, :count].tolist(), checked[r], stop_strings, detokenize)
        if hit is None:
            checked[r] = count
        else:
            stop_at[r] = hit
            stopped_b[r] = True
    return stopped_b
