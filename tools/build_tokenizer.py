"""Build the small byte-level BPE tokenizer that ships with cmat_jax for the tiny preset.

    python tools/build_tokenizer.py [--corpus cmat_jax/assets/corpus.txt]
                                    [--output cmat_jax/assets/tokenizer]

Trains a byte-level BPE (1024 ids in all, the three ChatML special tokens
included) on the project's own corpus and writes a Hugging Face tokenizer
directory: tokenizer.json, tokenizer_config.json (with a Qwen-style ChatML chat
template) and special_tokens_map.json. The output is byte-for-byte the same on
every run, so the shipped files can be rebuilt and compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

# Training in one thread keeps the merge order independent of scheduling.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "cmat_jax" / "assets" / "corpus.txt"
DEFAULT_OUTPUT = REPO_ROOT / "cmat_jax" / "assets" / "tokenizer"

VOCAB_SIZE = 1024
END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

# ChatML as the Qwen2 family renders it: a default system turn when the
# conversation has none, every turn closed by <|im_end|> and a newline, and
# `<|im_start|>assistant\n` as the generation prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if loop.first and message['role'] != 'system' -%}\n"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n"
)


def train_tokenizer(corpus_text: str) -> Tokenizer:
    """Byte-level BPE with single-digit pre-splitting (as Qwen does) and lossless decoding."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Untrimmed offsets: every character of the text belongs to exactly one
    # token, which the loss-mask code relies on.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    # One piece of text, so that runs of newlines across lines are seen and merged.
    tokenizer.train_from_iterator([corpus_text], trainer=trainer)
    return tokenizer


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


def special_tokens_map() -> dict:
    return {
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "additional_special_tokens": [IM_START, IM_END],
    }


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(corpus: Path, output: Path) -> None:
    if not corpus.is_file():
        sys.exit(f"corpus file {corpus} does not exist; pass --corpus with a UTF-8 text file")
    corpus_text = corpus.read_text(encoding="utf-8")
    tokenizer = train_tokenizer(corpus_text)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != VOCAB_SIZE:
        sys.exit(
            f"the trained vocabulary has {size} ids, expected {VOCAB_SIZE}; the corpus "
            f"{corpus} is too small to learn enough merges: add more text"
        )
    output.mkdir(parents=True, exist_ok=True)
    (output / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    write_json(output / "tokenizer_config.json", tokenizer_config())
    write_json(output / "special_tokens_map.json", special_tokens_map())
    check(output, corpus_text)


def check(output: Path, corpus_text: str) -> None:
    """Load the result the way the package does and print what a user should know."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(output))
    ids = tok(corpus_text, add_special_tokens=False)["input_ids"]
    if tok.decode(ids) != corpus_text:
        sys.exit("decoding the tokenized corpus did not give the corpus back; the tokenizer is not lossless")
    if len(tok) != VOCAB_SIZE:
        sys.exit(f"transformers sees {len(tok)} ids, expected {VOCAB_SIZE}")
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    digest = hashlib.sha256((output / "tokenizer.json").read_bytes()).hexdigest()[:16]
    print(f"wrote {output}")
    print(f"  vocab size        {len(tok)} (eos {tok.eos_token!r}={tok.eos_token_id}, pad {tok.pad_token!r}={tok.pad_token_id})")
    print(f"  corpus            {len(corpus_text.encode('utf-8'))} bytes -> {len(ids)} tokens")
    print(f"  tokenizer.json    sha256 {digest}...")
    print(f"  chat template     {rendered!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="UTF-8 training text")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="tokenizer directory to write")
    args = parser.parse_args()
    build(args.corpus, args.output)


if __name__ == "__main__":
    main()
