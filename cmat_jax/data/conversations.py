"""Conversation records: the ShareGPT/AgentInstruct and OpenAI JSON forms, read from JSONL.

Accepted records (one JSON object per line; blank lines are skipped):

    {"conversations": [{"from": "human" | "gpt" | "system", "value": "...", "loss": true | false | null}]}
    {"messages": [{"role": "user" | "assistant" | "system", "content": "...", "loss": ...}]}

Both become a list of `Message`s. `loss` is optional; false on an assistant
turn means it contributes no loss (AgentInstruct marks its "Ok." replies this
way); true on a user or system turn is refused. A JSONL file is parsed whole
when opened, so a malformed line fails at once with its path and line number;
for data sets too large for that, build a TFDS dataset (tools/build_tfds.py).
`data/sources.py` opens either kind from a path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, Sequence

from cmat_jax.chat import Message, check_message
from cmat_jax.fileio import read_jsonl

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
OPENAI_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


class ConversationSource(Protocol):
    """A random-access collection of conversations with locations for error messages."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> list[Message]: ...

    def describe(self, index: int) -> str:
        """Where record `index` came from, e.g. 'data/agent.jsonl:12'."""
        ...


class DataError(ValueError):
    """A data record is malformed; the message names the file and line (or record)."""


def parse_conversation(record: Any, where: str) -> list[Message]:
    """Turn one decoded JSON record into messages, or raise DataError naming `where`."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
    if "conversations" in record:
        field, role_key, content_key, roles = "conversations", "from", "value", SHAREGPT_ROLES
    elif "messages" in record:
        field, role_key, content_key, roles = "messages", "role", "content", OPENAI_ROLES
    else:
        raise DataError(
            f"{where}: expected a 'conversations' list (ShareGPT form) or a 'messages' list "
            f"(OpenAI form); found keys {sorted(record)}"
        )
    turns = record[field]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{field}' must be a non-empty list, found {turns!r:.80}")
    messages = []
    for index, turn in enumerate(turns):
        at = f"{where}: {field}[{index}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at} is a {type(turn).__name__}; expected an object with '{role_key}' and '{content_key}'")
        raw_role = turn.get(role_key)
        if raw_role not in roles:
            raise DataError(f"{at}.{role_key} is {raw_role!r}; expected one of {', '.join(roles)}")
        try:
            messages.append(check_message(roles[raw_role], turn.get(content_key), turn.get("loss"), where=at,
                                          content_field=content_key, role_label=raw_role))
        except ValueError as error:
            raise DataError(str(error)) from None
    return messages


def conversation_to_json(messages: Sequence[Message]) -> str:
    """The normalized OpenAI-form JSON of a conversation (what TFDS records hold)."""
    turns = [m.to_dict() for m in messages]
    return json.dumps({"messages": turns}, ensure_ascii=False)


class JsonlConversations:
    """All conversations of a JSONL file, parsed and validated up front."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"conversation file {self.path} does not exist")
        self._messages: list[list[Message]] = []
        self._lines: list[int] = []
        for line in read_jsonl(self.path, DataError):
            self._messages.append(parse_conversation(line.value, f"{self.path}:{line.number}"))
            self._lines.append(line.number)
        if not self._messages:
            raise DataError(f"{self.path} holds no conversations (the file is empty or all lines are blank)")

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> list[Message]:
        return self._messages[index]

    def line_number(self, index: int) -> int:
        return self._lines[index]

    def describe(self, index: int) -> str:
        return f"{self.path}:{self._lines[index]}"
