"""Host bookkeeping of persistent KV slots: which cache row holds which context, and what a call must prefill.

A *context* is an id chosen by the caller (the rollout engine uses the episode's id). Each row of the slot
cache holds at most one context: the token ids whose keys and values the row holds, in position order. A
call names, for every request, its context and its full prompt. The plan says, per request:

- *reuse*: the longest common prefix of the row's ids and the prompt is kept (at most len(prompt) - 1 ids,
  so at least one id is run to give the first token's logits), and only the rest (the *suffix*) is
  prefilled. A context that is not append-only any more (a rebuilt prompt) keeps what still agrees.
- *fresh*: a request with nothing to keep, or whose suffix is longer than `max_append`, is prefilled from
  scratch in a sub-batch; requests with identical prompts (the G samples of a task) form one *group* and
  share one prefill.

A new context takes the released row whose retained ids share the longest prefix with its prompt (a retry
of the same task finds its instructions there); when none shares any, it is prefilled from scratch.
Released rows not taken by this call are dropped. Every call lays the rows out anew: the call's requests in request order, then the rows of
contexts held but not asked for in this call; the device repacks the cache into that layout. The number of
rows is a bucket that grows with the contexts held and does not shrink until `clear()`.

Nothing here touches a device; slots.py carries the plan out.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Optional, Sequence

import numpy as np


@dataclasses.dataclass
class Plan:
    """One call's layout and work. Requests occupy rows [0, len(prompts)) in request order."""

    requests: int  # rows [0, requests) hold this call's requests
    rows: int  # cache rows after the repack (a batch bucket)
    source_b: np.ndarray  # [rows] int32: the current row whose context each new row keeps (-1: none)
    keep_b: np.ndarray  # [rows] int32: how many of that context's leading ids the new row keeps
    groups: list[tuple[list[int], list[int]]]  # fresh prefills: (prompt, the requests that share it)
    suffix: dict[int, list[int]]  # request -> ids appended after its kept ids
    held: list[int]  # current rows of contexts held but not in this call, in their new order after the requests


class SlotTable:
    """Owners and ids of the slot cache's rows (see the module docstring)."""

    def __init__(self):
        self.owners: list[Optional[Hashable]] = []  # per row: its context, None when free
        self.ids: list[np.ndarray] = []  # per row: the ids whose keys and values it holds

    def __len__(self) -> int:
        return len(self.owners)

    def held(self) -> int:
        return sum(o is not None for o in self.owners)

    def plan(self, contexts: Sequence[Hashable], prompts: Sequence[Sequence[int]], *, max_append: int,
             bucket: Callable[[int], int]) -> Plan:
        """The plan of a call (module docstring); `bucket(n)` rounds a row count up to a batch bucket."""
        if len(set(contexts)) != len(contexts):
            raise ValueError("each context may appear once per call; a context holds one conversation")
        if any(c is None for c in contexts):
            raise ValueError("context ids must not be None")
        owned = {owner: r for r, owner in enumerate(self.owners) if owner is not None}
        free = [r for r, owner in enumerate(self.owners) if owner is None and len(self.ids[r])]
        asked = set(contexts)
        source, keep = [], []
        for context, prompt in zip(contexts, prompts):
            prompt = np.asarray(prompt, np.int64)
            row = owned.get(context)
            if row is None:
                row = self._best_free(prompt, free)
                if row is not None:
                    free.remove(row)
            kept = 0 if row is None else min(common_prefix(self.ids[row], prompt), len(prompt) - 1)
            if kept == 0 or len(prompt) - kept > max_append:
                row, kept = -1, 0
            source.append(row)
            keep.append(kept)
        held = [r for c, r in owned.items() if c not in asked]
        # Rows never shrink within a session: fewer cache shapes, fewer compiled programs.
        rows = max(bucket(len(contexts) + len(held)), len(self.owners))
        source += held + [-1] * (rows - len(contexts) - len(held))
        keep += [len(self.ids[r]) for r in held] + [0] * (rows - len(contexts) - len(held))
        groups: dict[tuple, list[int]] = {}
        suffix: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            if keep[i] == 0:
                groups.setdefault(tuple(prompt), []).append(i)
            else:
                suffix[i] = list(prompt[keep[i]:])
        return Plan(len(contexts), rows, np.asarray(source, np.int32), np.asarray(keep, np.int32),
                    [(list(p), members) for p, members in groups.items()], suffix, held)

    def commit(self, plan: Plan, contexts: Sequence[Hashable], context_ids: Sequence[Sequence[int]]) -> None:
        """The table after a call carried out `plan`: request i's row holds `context_ids[i]`."""
        owners = list(contexts) + [self.owners[r] for r in plan.held]
        ids = [np.asarray(x, np.int64) for x in context_ids] + [self.ids[r] for r in plan.held]
        empty = plan.rows - len(owners)
        self.owners = owners + [None] * empty
        self.ids = ids + [np.zeros((0,), np.int64)] * empty

    def release(self, context: Hashable) -> bool:
        """Frees the context's row (its ids stay, for a later context to reuse); False if it holds none."""
        for r, owner in enumerate(self.owners):
            if owner == context:
                self.owners[r] = None
                return True
        return False

    def clear(self) -> None:
        self.owners, self.ids = [], []

    def _best_free(self, prompt: np.ndarray, free: list[int]) -> Optional[int]:
        """The free row sharing the longest prefix (> 0) with `prompt`; None when none shares any (the request
        is then prefilled from scratch into a new row)."""
        best, best_len = None, 0
        for r in free:
            n = common_prefix(self.ids[r], prompt)
            if n > best_len:
                best, best_len = r, n
        return best


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n
