"""Conversation sources: JSONL parsing and its errors, and the TFDS array_record round trip."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmat_jax.data.conversations import DataError, JsonlConversations
from cmat_jax.data.sources import open_conversations
from cmat_jax.data.sft import make_sft_batches
from cmat_jax.data.tokenizer import Message, load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]

SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "Use SQL."},
        {"from": "human", "value": "Count rows.", "loss": None},
        {"from": "gpt", "value": "Ok.", "loss": False},
        {"from": "human", "value": "Go."},
        {"from": "gpt", "value": "SELECT COUNT(*) FROM t;", "loss": True},
    ]
}
OPENAI = {"messages": [{"role": "user", "content": "Héllo 数据"}, {"role": "assistant", "content": "Hi."}]}


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8")
    return path


def test_both_forms_parse_and_blank_lines_keep_line_numbers(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [SHAREGPT, "", "   ", OPENAI])
    source = JsonlConversations(path)
    assert len(source) == 2
    assert source[0] == [
        Message("system", "Use SQL."),
        Message("user", "Count rows."),
        Message("assistant", "Ok.", False),
        Message("user", "Go."),
        Message("assistant", "SELECT COUNT(*) FROM t;", True),
    ]
    assert source[1] == [Message("user", "Héllo 数据"), Message("assistant", "Hi.")]
    assert source.describe(1) == f"{path}:4"


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ('{"messages": [', r":3: not valid JSON"),
        ('["a list"]', r":3: expected a JSON object, found list"),
        ('{"text": "hi"}', r":3: expected a 'conversations' list .* found keys \['text'\]"),
        ('{"conversations": []}', r":3: 'conversations' must be a non-empty list"),
        ('{"conversations": [{"from": "bot", "value": "x"}]}', r":3: conversations\[0\]\.from is 'bot'; expected one of"),
        ('{"messages": [{"role": "user", "content": 5}]}', r":3: messages\[0\]\.content is int, expected a string"),
        ('{"messages": [{"role": "user", "content": [{"type": "text"}]}]}', r":3: messages\[0\]\.content is list"),
        ('{"conversations": [{"from": "gpt", "value": "x", "loss": "no"}]}', r":3: conversations\[0\]\.loss is 'no'"),
        ('{"conversations": [{"from": "human", "value": "x", "loss": true}]}', r":3: conversations\[0\] is a human turn with loss: true"),
        ('{"messages": ["just text"]}', r":3: messages\[0\] is a str"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [OPENAI, SHAREGPT, bad_line, OPENAI])
    with pytest.raises(DataError, match=expected) as info:
        JsonlConversations(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_conversations(tmp_path / "nope.jsonl")
    empty = write_lines(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(DataError, match="holds no conversations"):
        JsonlConversations(empty)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(OPENAI).encode() + b"\n" + '{"messages": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 18\)"):
        JsonlConversations(latin1)


# Runs in a fresh interpreter where `import tensorflow` fails whatever is installed.
NO_TENSORFLOW_ROUND_TRIP = """
import importlib.abc, json, sys

class HideTensorFlow(importlib.abc.MetaPathFinder):
    # Wraps a finder so that tensorflow is never found, even where it is installed.
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)

sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
import importlib.util
assert importlib.util.find_spec("tensorflow") is None
try:
    import tensorflow
    raise SystemExit("tensorflow is importable")
except ImportError:
    pass
import tensorflow_datasets as tfds
from cmat_jax.data.tfds_source import write_tfds_dataset, TfdsConversations
from cmat_jax.data.conversations import JsonlConversations, conversation_to_json
src, out = sys.argv[1], sys.argv[2]
dataset_dir = write_tfds_dataset({"train": src, "validation": src}, out, name="round_trip")
jsonl = JsonlConversations(src)
for split in ("train", "validation"):
    # The plain tfds API reads it back...
    records = tfds.builder_from_directory(str(dataset_dir)).as_data_source(split=split)
    assert len(records) == len(jsonl), (len(records), len(jsonl))
    for i in range(len(jsonl)):
        assert records[i]["conversation"].decode() == conversation_to_json(jsonl[i])
        assert int(records[i]["source_line"]) == jsonl.line_number(i)
    # ...and so does tfds.data_source by name, and our reader.
    by_name = tfds.data_source("round_trip", split=split, data_dir=out)
    assert len(by_name) == len(jsonl)
    ours = TfdsConversations(out, split)
    assert [ours[i] for i in range(len(ours))] == [jsonl[i] for i in range(len(jsonl))]
print(json.dumps({"dir": str(dataset_dir), "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    rng = np.random.default_rng(7)
    agent, general = [], []
    for i in range(12):
        agent.append(
            {
                "conversations": [
                    {"from": "human", "value": f"Task {i}: " + "list rows " * int(rng.integers(1, 6))},
                    {"from": "gpt", "value": "Ok.", "loss": False},
                    {"from": "human", "value": "Go."},
                    {"from": "gpt", "value": f"SELECT * FROM t{i} LIMIT {i};" * int(rng.integers(1, 4))},
                ]
            }
        )
    for i in range(9):
        general.append({"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": "fine " * (i + 1)}]})
    return write_lines(root / "agent.jsonl", agent), write_lines(root / "general.jsonl", general)


def test_tfds_round_trip_without_tensorflow(sft_files, tmp_path):
    agent_path, _ = sft_files
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_ROUND_TRIP, str(agent_path), str(tmp_path / "tfds")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tensorflow_loaded"] is False
    assert sorted(p.name for p in Path(report["dir"]).iterdir()) == [
        "dataset_info.json", "features.json",
        "round_trip-train.array_record-00000-of-00001", "round_trip-validation.array_record-00000-of-00001",
    ]


def test_tfds_and_jsonl_sources_give_identical_batches(sft_files, tmp_path):
    from cmat_jax.data.tfds_source import write_tfds_dataset

    agent_path, general_path = sft_files
    agent_dir = write_tfds_dataset({"train": agent_path}, tmp_path, name="agent")
    general_dir = write_tfds_dataset({"train": general_path}, tmp_path, name="general")
    tok = load_tokenizer()
    settings = dict(agent_fraction=0.4, batch_size=2, seq_len=96, mode="packed", seed=3)
    from_jsonl = make_sft_batches(tok, agent_path, general_path, **settings)
    from_tfds = make_sft_batches(tok, agent_dir, general_dir, **settings)
    for _ in range(6):
        a, b = next(from_jsonl), next(from_tfds)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with pytest.raises(ValueError, match="has no split 'test'"):
        make_sft_batches(tok, agent_dir, split="test", batch_size=1, seq_len=8)


def test_tfds_writer_refuses_overwrite_and_bad_input(sft_files, tmp_path):
    from cmat_jax.data.tfds_source import write_tfds_dataset

    agent_path, _ = sft_files
    write_tfds_dataset({"train": agent_path}, tmp_path, name="once")
    with pytest.raises(FileExistsError, match="already exists"):
        write_tfds_dataset({"train": agent_path}, tmp_path, name="once")
    bad = write_lines(tmp_path / "bad.jsonl", [OPENAI, '{"messages": [{"role": "robot", "content": "x"}]}'])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: messages\[0\]\.role is 'robot'"):
        write_tfds_dataset({"train": bad}, tmp_path / "never", name="never")
    assert not (tmp_path / "never").exists()


def test_build_tfds_cli(sft_files, tmp_path):
    agent_path, _ = sft_files
    cli = [sys.executable, str(REPO_ROOT / "tools" / "build_tfds.py"), "--output_dir", str(tmp_path), "--name", "cli"]
    ok = subprocess.run(cli + ["--input", f"train={agent_path}"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "train: 12 conversations" in ok.stdout
    bad = write_lines(tmp_path / "broken.jsonl", [OPENAI, "{not json"])
    failed = subprocess.run(cli + ["--input", str(bad), "--overwrite"], capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0
    assert f"{bad}:2: not valid JSON" in failed.stderr and "Traceback" not in failed.stderr
