"""Long-term memory (reflections per task) and the short-term memory's token budget.

Long-term memory follows Reflexion: a reflection is written only after a failed
trial, by one model call; a retry shows the last `omega` reflections of its task
under "Your memory for the task below:" as "Trial 1:", "Trial 2:", ... entries,
before the task. Memory is plain data: `state()` is JSON, `restore()` reads it
back, so it is saved with a run's checkpoint and can be inspected.

Short-term memory is the episode's own conversation. `fit_observations` drops
the oldest observation turns (never the instructions or the task) until a
rendered prompt fits its token budget.
"""

from __future__ import annotations

from typing import Callable, Sequence

from cmat_jax.chat import USER, Message

MEMORY_HEADER = "Your memory for the task below:"
DROPPED_OBSERVATION = "(output of an earlier statement left out to save space)"


class ReflectionMemory:
    """Reflections per task id, oldest first."""

    def __init__(self, omega: int = 3):
        if not isinstance(omega, int) or omega < 1:
            raise ValueError(f"reflection.omega (reflections shown per retry) must be a positive int, found {omega!r}")
        self.omega = omega
        self._entries: dict[str, list[str]] = {}

    def add(self, task_id: str, reflection: str) -> None:
        self._entries.setdefault(task_id, []).append(reflection)

    def recent(self, task_id: str) -> list[str]:
        """The last `omega` reflections of the task: what a retry is shown."""
        return self._entries.get(task_id, [])[-self.omega:]

    def render(self, task_id: str) -> str:
        """The memory block shown before the task, or "" when the task has no reflection."""
        return render_memory(self.recent(task_id))

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def state(self) -> dict:
        return {"omega": self.omega, "entries": {k: list(v) for k, v in self._entries.items()}}

    def restore(self, state: dict) -> None:
        entries = state.get("entries")
        if not isinstance(entries, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in entries.values()):
            raise ValueError("memory state must hold {'entries': {task_id: [reflection, ...]}}; "
                             f"found {str(state)[:120]}")
        self._entries = {k: list(v) for k, v in entries.items()}


def render_memory(reflections: Sequence[str]) -> str:
    if not reflections:
        return ""
    lines = [MEMORY_HEADER]
    lines += [f"Trial {i}:\n{text.strip()}" for i, text in enumerate(reflections, start=1)]
    return "\n".join(lines) + "\n\n"


def fit_observations(messages: list[Message], first_observation: int, fits: Callable[[list[Message]], bool]
                     ) -> tuple[list[Message], int]:
    """(messages, dropped): the oldest user turns from index `first_observation` on are replaced by a
    short placeholder until `fits(messages)`; the last turn (the newest observation) is never dropped.
    `dropped` counts the turns replaced; the caller decides what happens when even that does not fit."""
    out = list(messages)
    dropped = 0
    candidates = [i for i in range(first_observation, len(out) - 1)
                  if out[i].role == USER and out[i].content != DROPPED_OBSERVATION]
    for index in candidates:
        if fits(out):
            break
        out[index] = Message(USER, DROPPED_OBSERVATION)
        dropped += 1
    return out, dropped
