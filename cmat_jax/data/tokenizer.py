"""Tokenizers and chat templates: conversations -> token ids with a loss mask.

A conversation is rendered with the tokenizer's own chat template and tokenized
once, exactly as `tokenizer.apply_chat_template(..., tokenize=True)` would. The
loss mask marks the tokens the assistant generates: the text that follows the
generation prompt up to and including the end-of-turn token (`<|im_end|>` for
ChatML, `</s>` for Llama-2 `[INST]` templates). Role headers, system and user
turns, and the newline a template writes after the end-of-turn token get 0.

The assistant spans are found without template-specific markers (Llama-2
templates have no `{% generation %}` blocks): for each assistant turn, the
conversation before it is rendered with the generation prompt, and that text
must be a prefix of the full rendering; what follows it, up to the end-of-turn
token, is what the model generates. Token offsets then map the character
spans onto tokens. A token is trained on only if every character it covers was
generated, so a token that a tokenizer merged across the prompt/answer
boundary (which the model could never have produced) counts as prompt.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cmat_jax.chat import Message, check_message

# Strings that close an assistant turn in the chat templates of the supported
# families; a tokenizer's own eos token is always added to these.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def bundled_tokenizer_dir() -> Path:
    """The directory of the small tokenizer shipped in the package (tiny preset)."""
    return Path(str(importlib.resources.files("cmat_jax") / "assets" / "tokenizer"))


def load_tokenizer(path: str | Path | None = None):
    """Load a Hugging Face tokenizer from a local directory (None: the bundled one).

    Returns a `transformers.PreTrainedTokenizerBase`. Only local files are read.
    """
    from transformers import AutoTokenizer

    directory = bundled_tokenizer_dir() if path is None else Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {directory} does not exist; pass a local Hugging Face "
            f"model or tokenizer directory (one holding {' and '.join(TOKENIZER_FILES)})"
        )
    has_fast_files = (directory / "tokenizer.json").is_file()
    if not has_fast_files and (directory / "qwen.tiktoken").is_file():
        raise ValueError(
            f"{directory} holds an original Qwen tokenizer (qwen.tiktoken), which loads only through "
            f"the checkpoint's own Python code; cmat_jax does not run downloaded code. Put a "
            f"tokenizer.json (fast tokenizer) with a ChatML chat template in that directory."
        )
    has_slow_files = any((directory / name).is_file() for name in ("tokenizer.model", "vocab.json"))
    if not (has_fast_files or has_slow_files):
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"tokenizer directory {directory} holds no tokenizer files (expected tokenizer.json, or "
            f"tokenizer.model / vocab.json); found {present or 'nothing'}. Copy the tokenizer files "
            f"of the model into it."
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as error:  # transformers raises many types; name the directory once.
        raise ValueError(f"could not load the tokenizer in {directory}: {error}") from error


def as_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[Message]:
    """Validate and normalize turns given as `Message`s or {"role", "content", "loss"?} dicts."""
    result = []
    for index, message in enumerate(messages):
        if isinstance(message, Message):
            role, content, loss = message.role, message.content, message.loss
        elif isinstance(message, Mapping):
            role, content, loss = message.get("role"), message.get("content"), message.get("loss")
        else:
            raise TypeError(f"message {index} is a {type(message).__name__}; expected a dict with role and content")
        result.append(check_message(role, content, loss, where=f"message {index}"))
    return result


def render_chat(tokenizer, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    """The chat template's text of `messages` (optionally followed by the generation prompt)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; set tokenizer.chat_template "
            f"or use a tokenizer directory whose tokenizer_config.json (or chat_template.jinja) has one"
        )
    plain = [{"role": m.role, "content": m.content} for m in messages]
    try:
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # jinja2 errors, or raise_exception() inside the template
        roles = ", ".join(m.role for m in messages) or "no messages"
        raise ValueError(
            f"the chat template of {tokenizer.name_or_path!r} could not render a conversation with "
            f"turns [{roles}]: {error}"
        ) from error


def _end_of_turn_markers(tokenizer) -> list[str]:
    special = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
    markers = [m for m in END_OF_TURN_MARKERS if m in special]
    if tokenizer.eos_token and tokenizer.eos_token not in markers:
        markers.append(tokenizer.eos_token)
    return markers


def _generated_spans(tokenizer, messages: Sequence[Message], full_text: str) -> list[tuple[int, int]]:
    """Character spans of `full_text` that trained assistant turns generate."""
    markers = _end_of_turn_markers(tokenizer)
    spans = []
    for index, message in enumerate(messages):
        if not message.trains:
            continue
        if index == 0:
            raise ValueError(
                "the conversation opens with an assistant turn, so there is no prompt it answers; "
                "start it with a user or system turn, or give that turn loss: false"
            )
        prompt = render_chat(tokenizer, messages[:index], add_generation_prompt=True)
        through_turn = render_chat(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (through_turn.startswith(prompt) and full_text.startswith(through_turn)):
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} does not render conversations "
                f"incrementally: the rendering up to assistant turn {index} is not a prefix of the "
                f"rendering of the whole conversation, so the assistant's tokens cannot be located. "
                f"Use a template that renders earlier turns the same way whatever follows them."
            )
        turn = through_turn[len(prompt):]
        content = message.content.strip()
        content_at = turn.find(content)
        if content_at < 0:
            raise ValueError(
                f"the content of assistant turn {index} does not appear verbatim in what the chat "
                f"template of {tokenizer.name_or_path!r} renders for it ({turn[:80]!r}...); the "
                f"template changes the text, so its tokens cannot be located"
            )
        header = turn[:content_at]
        if header.strip() and prompt == render_chat(tokenizer, messages[:index], add_generation_prompt=False):
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} writes no generation prompt "
                f"(add_generation_prompt changes nothing), so the role header {header!r} of assistant turn "
                f"{index} would be trained on, and rollout prompts would lack it. Use a template with an "
                f"add_generation_prompt branch."
            )
        content_end = content_at + len(content)
        marker_hits = [(at, m) for m in markers if (at := turn.find(m, content_end)) >= 0]
        if marker_hits:
            at, marker = min(marker_hits)
            end = at + len(marker)
        else:
            # No end-of-turn token: the turn generates its text up to the content's end.
            end = turn.rfind(content) + len(content)
        spans.append((len(prompt), len(prompt) + end))
    return spans


def _tokenize_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} is a slow (Python) tokenizer; loss masks need the "
            f"character offsets only fast tokenizers give. Provide tokenizer.json in its directory."
        )
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]


def encode_conversation(
    tokenizer, messages: Iterable[Message | Mapping[str, Any]], add_generation_prompt: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Render `messages` with the chat template -> (ids int32[t], loss_mask int32[t]).

    loss_mask is 1 exactly on the tokens of trained assistant turns (content and
    end-of-turn token). A message with `loss: False` contributes no loss.
    """
    turns = as_messages(messages)
    if not turns:
        raise ValueError("the conversation has no messages")
    full_text = render_chat(tokenizer, turns, add_generation_prompt)
    ids, offsets = _tokenize_with_offsets(tokenizer, full_text)
    spans = _generated_spans(tokenizer, turns, full_text)

    # Per character: 1 if generated by a trained assistant turn.
    generated = np.zeros(len(full_text) + 1, dtype=np.int32)
    for start, end in spans:
        generated[start:end] = 1
    # Prefix sums answer "is every character of [s, e) generated?" in O(1).
    cumulative = np.concatenate([[0], np.cumsum(generated)])
    loss_mask = np.zeros(len(ids), dtype=np.int32)
    for position, (start, end) in enumerate(offsets):
        if end > start:
            loss_mask[position] = int(cumulative[end] - cumulative[start] == end - start)
        elif 0 < start:
            # A zero-width token (e.g. a prepended word marker) trains only
            # strictly inside a generated span.
            loss_mask[position] = int(generated[start - 1] == 1 and generated[start] == 1)
    return np.asarray(ids, dtype=np.int32), loss_mask


def encode_prompt(tokenizer, messages: Iterable[Message | Mapping[str, Any]]) -> np.ndarray:
    """Token ids of `messages` followed by the generation prompt (what a rollout feeds the model)."""
    turns = as_messages(messages)
    text = render_chat(tokenizer, turns, add_generation_prompt=True)
    return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32)


def end_of_turn_ids(tokenizer) -> list[int]:
    """Ids of the tokens that close an assistant turn (the end-of-turn markers and EOS): where sampling stops."""
    ids = []
    for marker in _end_of_turn_markers(tokenizer):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def decode_ids(tokenizer, ids: Sequence[int]) -> str:
    """The exact text of `ids`, special tokens included and no clean-up: text views of token records."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def tokenize_text(tokenizer, text: str) -> list[int]:
    """Ids of `text` as one piece, with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
