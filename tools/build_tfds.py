"""Turn SFT conversation JSONL files into a TFDS array_record dataset (no TensorFlow needed).

    python tools/build_tfds.py --input agent.jsonl --output_dir data/tfds
    python tools/build_tfds.py --input train=agent_train.jsonl --input validation=agent_val.jsonl \
                               --output_dir data/tfds --name agent_sft [--overwrite]

Each `--input` is `SPLIT=PATH` (a bare PATH is the train split). Every line is
validated first (ShareGPT `conversations` or OpenAI `messages` form); a
malformed line stops the build with its file and line number. Records hold the
normalized conversation JSON and the source line number; they keep the order
of the file. The dataset lands in `<output_dir>/<name>/1.0.0/`, which the
trainer accepts wherever it accepts a JSONL path, and which reads back with
`tfds.builder_from_directory(dir).as_data_source(split)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmat_jax.data.conversations import DataError  # noqa: E402
from cmat_jax.data.tfds_source import DEFAULT_NAME, TfdsConversations, write_tfds_dataset  # noqa: E402


def parse_inputs(values: list[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for value in values:
        split, sep, path = value.partition("=")
        if not sep:
            split, path = "train", value
        if split in inputs:
            raise SystemExit(f"split {split!r} is given twice (--input {value}); give each split once")
        inputs[split] = Path(path)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", action="append", required=True, metavar="[SPLIT=]PATH", help="JSONL file")
    parser.add_argument("--output_dir", type=Path, required=True, help="TFDS data dir to write into")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    args = parser.parse_args()

    inputs = parse_inputs(args.input)
    try:
        dataset_dir = write_tfds_dataset(inputs, args.output_dir, name=args.name, overwrite=args.overwrite)
    except (DataError, FileNotFoundError, FileExistsError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None

    print(f"wrote {dataset_dir}")
    for split in inputs:
        records = TfdsConversations(dataset_dir, split)
        print(f"  {split}: {len(records)} conversations (read back through tfds)")


if __name__ == "__main__":
    main()
