"""A path -> its conversations: a JSONL file (conversations.py) or a TFDS dataset directory (tfds_source.py).

This is the one module that knows both kinds, so neither imports the other's
opener; TFDS is imported only when a directory is opened.
"""

from __future__ import annotations

from pathlib import Path

from cmat_jax.data.conversations import ConversationSource, JsonlConversations


def open_conversations(path: str | Path, split: str = "train") -> ConversationSource:
    """A JSONL file, or a TFDS dataset directory written by tools/build_tfds.py (`split` picks its split)."""
    path = Path(path)
    if path.is_dir():
        from cmat_jax.data.tfds_source import TfdsConversations  # tfds is slow to import: only when needed

        return TfdsConversations(path, split)
    if path.is_file():
        return JsonlConversations(path)
    raise FileNotFoundError(
        f"conversation source {path} does not exist; expected a .jsonl file or a TFDS dataset "
        f"directory built by tools/build_tfds.py"
    )
