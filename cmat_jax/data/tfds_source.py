"""Conversations stored as a TFDS array_record dataset, written and read without TensorFlow.

Each record holds one conversation as normalized OpenAI-form JSON text
(`{"messages": [{"role", "content", "loss"?}]}`, see `conversation_to_json`)
plus the line number it had in the source JSONL. Keeping text rather than
token ids leaves the dataset independent of the tokenizer and chat template.
Records keep the order of the source file (shuffling is the batcher's job).

Layout on disk: `<data_dir>/<name>/<version>/` holding `dataset_info.json`,
`features.json` and `<name>-<split>.array_record-0000N-of-0000M` files; it
reads back with `tfds.builder_from_directory(dir).as_data_source(split)`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from cmat_jax.data.conversations import DataError, JsonlConversations, conversation_to_json, parse_conversation
from cmat_jax.chat import Message

DATASET_VERSION = "1.0.0"
DEFAULT_NAME = "sft_conversations"


def _builder_class():
    """Defined on first use so that importing cmat_jax.data does not import tfds."""
    import numpy as np
    import tensorflow_datasets as tfds

    class ConversationsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(DATASET_VERSION)
        # Not a dataset package: no checksums file to look up next to the code
        # (looking it up would import `importlib_resources`).
        code_path = None

        def __init__(self, *, name: str, sources: Mapping[str, JsonlConversations], **kwargs):
            self.name = name
            self._sources = sources
            super().__init__(**kwargs)

        def _info(self):
            described = ", ".join(f"{split}: {src.path.name}" for split, src in self._sources.items())
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Conversations for supervised fine-tuning ({described}).",
                features=tfds.features.FeaturesDict(
                    {
                        "conversation": tfds.features.Text(),
                        "source_line": tfds.features.Scalar(dtype=np.int64),
                    }
                ),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(source) for split, source in self._sources.items()}

        def _generate_examples(self, source: JsonlConversations):
            for index in range(len(source)):
                yield index, {
                    "conversation": conversation_to_json(source[index]),
                    "source_line": source.line_number(index),
                }

    return ConversationsBuilder


def write_tfds_dataset(
    inputs: Mapping[str, str | Path], data_dir: str | Path, name: str = DEFAULT_NAME, overwrite: bool = False
) -> Path:
    """Validate JSONL files (split -> path) and write them as one TFDS array_record dataset.

    Returns the dataset directory `<data_dir>/<name>/<version>`.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"dataset name {name!r} must be snake_case (lower-case letters, digits, underscores)")
    if not inputs:
        raise ValueError("no input files given; pass at least one split=path")
    for split in inputs:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", split):
            raise ValueError(f"split name {split!r} must be snake_case, e.g. train or validation")
    # Parse everything first: a malformed line fails before anything is written.
    sources = {split: JsonlConversations(path) for split, path in inputs.items()}
    data_dir = Path(data_dir)
    dataset_dir = data_dir / name / DATASET_VERSION
    if dataset_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{dataset_dir} already exists; remove it or pass overwrite=True (--overwrite)")
        shutil.rmtree(dataset_dir)
    builder = _builder_class()(name=name, sources=sources, data_dir=str(data_dir), file_format="array_record")
    with tempfile.TemporaryDirectory() as download_dir:  # tfds wants one; nothing is downloaded
        builder.download_and_prepare(download_dir=download_dir)
    return Path(builder.data_dir)


def find_dataset_dir(path: str | Path) -> Path:
    """The directory holding dataset_info.json: `path` itself, or the single one below it."""
    path = Path(path)
    if (path / "dataset_info.json").is_file():
        return path
    found = sorted(p.parent for p in [*path.glob("*/dataset_info.json"), *path.glob("*/*/dataset_info.json")])
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"{path} is not a TFDS dataset: no dataset_info.json in it or in the two levels below; "
            f"build one with tools/build_tfds.py"
        )
    raise ValueError(f"{path} holds several TFDS datasets ({', '.join(map(str, found))}); pass one of them")


class TfdsConversations:
    """Random access to the conversations of one split, through a tfds array_record data source."""

    def __init__(self, path: str | Path, split: str = "train"):
        import tensorflow_datasets as tfds

        self.path = find_dataset_dir(path)
        self.split = split
        builder = tfds.builder_from_directory(str(self.path))
        splits = sorted(builder.info.splits.keys())
        if split not in splits:
            raise ValueError(f"TFDS dataset {self.path} has no split {split!r}; it has {', '.join(splits)}")
        if "conversation" not in builder.info.features:
            raise ValueError(
                f"TFDS dataset {self.path} has no 'conversation' feature (features: "
                f"{sorted(builder.info.features)}); it was not written by tools/build_tfds.py"
            )
        self._source = builder.as_data_source(split=split)
        self._description = builder.info.description

    def __len__(self) -> int:
        return len(self._source)

    def _record(self, index: int) -> dict:
        return self._source[index]

    def describe(self, index: int) -> str:
        line = int(self._record(index)["source_line"])
        return f"{self.path} [{self.split}] record {index} (line {line} of the source JSONL)"

    def __getitem__(self, index: int) -> list[Message]:
        record = self._record(index)
        text = record["conversation"]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        where = f"{self.path} [{self.split}] record {index}"
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: the stored conversation is not valid JSON ({error.msg})") from None
        return parse_conversation(decoded, where)
