"""The prompt-id record of each episode: token ids are the record, text is a view.

An episode's first prompt is its opening rendered by the chat template (with
the generation prompt) and tokenized once. Its next prompt is the previous
prompt, the sampled ids and the ids of the new turns, found as the text the
chat template adds after what the previous ids decode to; every turn checks
that the new prompt decodes to the full rendering of the conversation. Where
the template does not extend the previous text, or old observations were
dropped to fit the budget, the prompt is rendered anew and a new segment starts.
Text is never re-tokenized into a prompt otherwise.

A segment is one append-only context; every turn that starts one (a rebuilt
prompt, a learned-Checker turn, a reflection) takes the trajectory's next
segment number (`Trajectory.next_segment`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from cmat_jax.agents.episode import Episode
from cmat_jax.agents.memory import fit_observations
from cmat_jax.chat import Message
from cmat_jax.data.tokenizer import decode_ids, render_chat, tokenize_text


class PromptIds:
    """Renders, extends and fits the prompt ids of one engine's episodes. Without a tokenizer (scripted
    replies only) episodes have no prompt ids, and every method leaves them so."""

    def __init__(self, tokenizer, budget: Optional[int], max_len: Optional[int] = None):
        self.tokenizer = tokenizer
        self.budget = budget  # prompt tokens an Assistant turn may have; None: no limit
        self.max_len = max_len  # the sampler's positions (prompt + reply); None: not known here

    def reply_budget(self, max_new_tokens: int) -> Optional[int]:
        """Prompt tokens a reply of `max_new_tokens` leaves room for (another role's turn); None: no limit."""
        return None if self.max_len is None else self.max_len - max_new_tokens

    def render(self, messages: Sequence[Message]) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """The conversation as a prompt: rendered with the generation prompt, tokenized once."""
        return tokenize_text(self.tokenizer, self.render(messages))

    def start(self, episode: Episode) -> None:
        if self.tokenizer is not None:
            episode.prompt_ids = self.encode(episode.messages)

    def extend(self, episode: Episode, completion_ids: list[int]) -> None:
        """prompt + completion + the ids of the turns the template adds; a new segment where that cannot be."""
        if self.tokenizer is None:
            return
        previous_ids = episode.prompt_ids + completion_ids
        previous_text = decode_ids(self.tokenizer, previous_ids)
        full_text = self.render(episode.messages)
        if full_text.startswith(previous_text):
            ids = previous_ids + tokenize_text(self.tokenizer, full_text[len(previous_text):])
            if decode_ids(self.tokenizer, ids) == full_text:
                episode.prompt_ids = ids
                return
        episode.segment = episode.trajectory.next_segment()
        episode.prompt_ids = tokenize_text(self.tokenizer, full_text)

    def fit(self, episode: Episode) -> bool:
        """Drops old observations until the prompt fits the budget (a new segment); False when nothing fits."""
        if self.budget is None or episode.prompt_ids is None or len(episode.prompt_ids) <= self.budget:
            return True
        fits = lambda messages: len(self.encode(messages)) <= self.budget  # noqa: E731
        messages, dropped = fit_observations(episode.messages, episode.opening_length, fits)
        if dropped:
            episode.messages = messages
            episode.trajectory.dropped_observations += dropped
            episode.segment = episode.trajectory.next_segment()
            episode.prompt_ids = self.encode(messages)
        return len(episode.prompt_ids) <= self.budget
