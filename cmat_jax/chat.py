"""The one conversation type: `Message` and the role names, shared by data/, envs/ and agents/.

A conversation is a list of `Message`s. Environments and agents speak in user
and assistant turns; training data may add system turns and mark single
assistant turns as not trained (`loss=False`). `check_message` is the one place
where a turn's fields are validated, whatever source it came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SYSTEM = "system"
USER = "user"
ASSISTANT = "assistant"
ROLES = (SYSTEM, USER, ASSISTANT)


@dataclasses.dataclass(frozen=True)
class Message:
    """One turn. `loss=None` means the default: assistant turns train, others do not."""

    role: str
    content: str
    loss: bool | None = None

    @property
    def trains(self) -> bool:
        return self.role == ASSISTANT and self.loss is not False

    def to_dict(self) -> dict[str, Any]:
        turn = {"role": self.role, "content": self.content}
        if self.loss is not None:
            turn["loss"] = self.loss
        return turn


def check_message(role: str, content: Any, loss: Any, *, where: str, content_field: str = "content",
                  role_label: str | None = None) -> Message:
    """A validated Message, or a ValueError that names `where` (e.g. 'data.jsonl:3: messages[0]').

    `role` must already be one of ROLES (sources map their own role names first);
    `role_label` is the source's name for it, used in messages.
    """
    if role not in ROLES:
        raise ValueError(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise ValueError(f"{where}.{content_field} is {type(content).__name__}, expected a string")
    if loss is not None and not isinstance(loss, bool):
        raise ValueError(f"{where}.loss is {loss!r}; expected true, false or null")
    if loss is True and role != ASSISTANT:
        raise ValueError(f"{where} is a {role_label or role} turn with loss: true; only assistant turns can be "
                         "trained on (their tokens are the ones the model generates)")
    return Message(role, content, loss)
