"""cmat_jax.cli: every command-line mistake of a config-file CLI is one `error:` line and status 2.

The CLI under test is a small entry point written here (a config flag plus a plain
flag, run with `cli.run(main)`), started in a fresh interpreter because ml_collections
reads the overrides from sys.argv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENTRY = """
from absl import flags
from ml_collections import config_flags

from cmat_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file", lock_config=True)
flags.DEFINE_integer("repeat", 1, "a plain absl flag")


def main(argv):
    print(_CONFIG.value.to_json(sort_keys=True))


if __name__ == "__main__":
    cli.run(main)
"""

CONFIG = """
from ml_collections import config_dict


def get_config():
    c = config_dict.ConfigDict()
    c.agent = "oracle"
    c.workdir = "out"
    c.train = config_dict.ConfigDict(dict(steps=10, seed=0, learning_rate=0.1, resume=False, decay="cosine"))
    c.train.buckets = config_dict.placeholder(tuple)
    c.train.unset = None
    return c
"""


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    (folder / "entry.py").write_text(ENTRY)
    (folder / "conf.py").write_text(CONFIG)
    (folder / "load_error.py").write_text("def get_config():\n    return undefined_name\n")
    (folder / "io_error.py").write_text("def get_config():\n    return open('/nonexistent/settings')\n")
    (folder / "value_error.py").write_text("def get_config():\n    raise ValueError('bad\\nsecond line')\n")
    return folder


def _run(folder, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "entry.py", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""  # main never ran
    return lines[0]


def test_a_correct_command_line_is_parsed_as_absl_does(cli_dir):
    result = _run(cli_dir, "--config", "conf.py", "--config.train.steps=7", "--config.train.buckets=(4, 8)",
                  "--config.train.resume=true", "--config.agent", "scripted", "--repeat=2")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["train"]["steps"] == 7 and config["train"]["buckets"] == [4, 8]
    assert config["train"]["resume"] is True and config["agent"] == "scripted"


@pytest.mark.parametrize("flag, expected", [
    ("--config.train.stepz=10", "error: --config.train.stepz: conf.py has no field train.stepz; "
                                "nearest valid names: train.steps"),
    ("--config.agnt=oracle", "error: --config.agnt: conf.py has no field agnt; nearest valid names: agent"),
    # The right name in another section.
    ("--config.learning_rate=0.2", "error: --config.learning_rate: conf.py has no field learning_rate; "
                                   "nearest valid names: train.learning_rate"),
    # Nothing close: every valid name at that level.
    ("--config.train.zzz=1", "error: --config.train.zzz: conf.py has no field train.zzz; valid names: "
                             "train.buckets, train.decay, train.learning_rate, train.resume, train.seed, "
                             "train.steps, train.unset"),
    ("--config.agent.name=x", "error: --config.agent.name: agent is a value in conf.py ('oracle'), "
                              "not a section with fields"),
])
def test_an_unknown_field_names_it_and_the_nearest_valid_names(cli_dir, flag, expected):
    assert _one_error_line(_run(cli_dir, "--config", "conf.py", flag)) == expected


@pytest.mark.parametrize("flag, expected", [
    ("--config.train.steps=ten", "error: --config.train.steps: expected an integer (the config has 10), found 'ten'"),
    ("--config.train.learning_rate=fast",
     "error: --config.train.learning_rate: expected a number (the config has 0.1), found 'fast'"),
    ("--config.train.resume=maybe",
     "error: --config.train.resume: expected true or false (the config has False), found 'maybe'"),
])
def test_a_value_of_the_wrong_type_names_the_field_and_the_type(cli_dir, flag, expected):
    assert _one_error_line(_run(cli_dir, "--config", "conf.py", "--config.train.steps=3", flag)) == expected


def test_a_none_field_and_a_section_say_what_to_do(cli_dir):
    assert _one_error_line(_run(cli_dir, "--config", "conf.py", "--config.train.unset=3")) == (
        "error: --config.train.unset: the field is None in conf.py, and a None field cannot be set from the "
        "command line (its type is unknown); set it in the config file")
    assert _one_error_line(_run(cli_dir, "--config", "conf.py", "--config.train=3")) == (
        "error: --config.train is a section of conf.py, not a value; set one of its fields, e.g. "
        "--config.train.buckets=...")


def test_config_file_problems_name_the_file(cli_dir):
    assert _one_error_line(_run(cli_dir, "--config", "cnof.py")) == (
        "error: config file cnof.py (--config) does not exist; did you mean conf.py?")
    assert _one_error_line(_run(cli_dir, "--config=nowhere/conf.py", "--config.train.steps=2")) == (
        "error: config file nowhere/conf.py (--config) does not exist")
    assert _one_error_line(_run(cli_dir)) == (
        "error: --config is missing; pass the path of a config file, e.g. --config=configs/<name>.py")
    assert _one_error_line(_run(cli_dir, "--config", "load_error.py")) == (
        "error: config file load_error.py (--config) failed to load at load_error.py:2: "
        "NameError: name 'undefined_name' is not defined")
    # ml_collections defers an IOError inside get_config() until the config is read; it is caught before main.
    assert _one_error_line(_run(cli_dir, "--config", "io_error.py")) == (
        "error: config file io_error.py (--config) failed to load at io_error.py:2: "
        "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/settings'")
    assert _one_error_line(_run(cli_dir, "--config", "value_error.py")) == (
        "error: config file value_error.py (--config) failed to load at value_error.py:2: ValueError: bad")


def test_other_flag_mistakes_are_one_line_too(cli_dir):
    line = _one_error_line(_run(cli_dir, "--config", "conf.py", "--repeet=2"))
    assert line.startswith("error: Unknown command line flag 'repeet'") and "repeat" in line
    line = _one_error_line(_run(cli_dir, "--config", "conf.py", "--repeat=two"))
    assert line.startswith("error: flag --repeat=two: ")


def test_the_project_configs_get_the_same_diagnosis(cli_dir):
    sft, evaluation = os.path.join(REPO, "configs", "sft_tiny.py"), os.path.join(REPO, "configs", "eval_dbbench.py")
    assert _one_error_line(_run(cli_dir, "--config", sft, "--config.train.stepz=10")) == (
        f"error: --config.train.stepz: {sft} has no field train.stepz; nearest valid names: train.steps")
    assert _one_error_line(_run(cli_dir, "--config", evaluation, "--config.agnt=oracle")) == (
        f"error: --config.agnt: {evaluation} has no field agnt; nearest valid names: agent")
    # A placeholder field (declared type, value None) takes a value as usual.
    result = _run(cli_dir, "--config", sft, "--config.data.bucket_lengths=(64, 128)", "--config.train.steps=2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"]["bucket_lengths"] == [64, 128]
