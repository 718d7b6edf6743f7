"""Data: tokenizers and chat templates -> token ids with loss masks; SFT sources, mixtures, batches."""

from cmat_jax.chat import Message
from cmat_jax.data.batching import BatchSpec, SftBatches, default_buckets
from cmat_jax.data.conversations import DataError, JsonlConversations, parse_conversation
from cmat_jax.data.mixture import MixtureSchedule
from cmat_jax.data.sft import make_sft_batches
from cmat_jax.data.sources import open_conversations
from cmat_jax.data.tokenizer import (
    bundled_tokenizer_dir,
    encode_conversation,
    encode_prompt,
    load_tokenizer,
)

__all__ = [
    "BatchSpec",
    "DataError",
    "JsonlConversations",
    "Message",
    "MixtureSchedule",
    "SftBatches",
    "bundled_tokenizer_dir",
    "default_buckets",
    "encode_conversation",
    "encode_prompt",
    "load_tokenizer",
    "make_sft_batches",
    "open_conversations",
    "parse_conversation",
]
