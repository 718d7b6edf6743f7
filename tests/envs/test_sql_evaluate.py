"""The evaluation CLI: config, agent registry, metrics.json and the printed table."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cmat_jax import evaluate
from cmat_jax.envs.sql import grading
from tests.envs.sql_helpers import REPO_ROOT, make_record, write_jsonl

_spec = importlib.util.spec_from_file_location("eval_dbbench", os.path.join(REPO_ROOT, "configs", "eval_dbbench.py"))
eval_dbbench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_dbbench)


def _tasks_file(tmp_path):
    rows_after_update = [
        ("Émile", "5", "Paris"),
        ("adam", "100", "Berlin"),
        ("Zoë", "17", "Berlin"),
        ("Bob", None, "Lyon"),
    ]
    answer_md5 = grading.hash_result_text(grading.mysql_table_hash(rows_after_update))
    records = [
        make_record("other", label=["Paris"]),
        make_record("counting", label=["2"]),
        make_record("UPDATE", label=["UPDATE People SET City = 'Lyon' WHERE Name = 'bob'"], answer_md5=answer_md5),
        make_record("INSERT", label=["INSERT INTO People VALUES ('Eve', '1', 'Oslo')"], answer_md5="[('0',)]"),
    ]
    return write_jsonl(tmp_path / "tasks.jsonl", records)


def test_evaluate_writes_metrics_and_episodes(tmp_path):
    config = eval_dbbench.get_config()
    config.tasks = str(_tasks_file(tmp_path))
    config.workdir = str(tmp_path / "out")
    metrics = evaluate.evaluate(config)
    # The oracle is right on everything but the INSERT task, whose answer_md5 above is deliberately wrong.
    assert metrics["SELECT_accuracy"] == 1.0 and metrics["UPDATE_accuracy"] == 1.0
    assert metrics["INSERT_accuracy"] == 0.0 and metrics["overall_cat_accuracy"] == pytest.approx(2 / 3)
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    with open(tmp_path / "out" / "episodes.jsonl") as f:
        episodes = [json.loads(line) for line in f]
    assert [e["task_type"] for e in episodes] == ["other", "counting", "UPDATE", "INSERT"]
    assert episodes[2]["steps"][0]["verdict"] == {"ok": True, "reason": "", "rule": ""}
    assert episodes[2]["messages"][3]["role"] == "assistant"
    table = evaluate.format_table(metrics)
    assert "overall_cat" in table and "INSERT" in table


def test_unknown_agent_and_missing_tasks_are_clear_errors(tmp_path):
    config = eval_dbbench.get_config()
    config.tasks = str(_tasks_file(tmp_path))
    config.workdir = str(tmp_path / "out")
    config.agent = "gpt"
    with pytest.raises(ValueError, match="registered agents: oracle"):
        evaluate.evaluate(config)
    config.agent, config.tasks = "oracle", ""
    with pytest.raises(ValueError, match="--config.tasks"):
        evaluate.evaluate(config)


def test_a_workdir_that_cannot_be_made_fails_before_any_episode(tmp_path, monkeypatch):
    config = eval_dbbench.get_config()
    config.tasks = str(_tasks_file(tmp_path))
    config.workdir = str(tmp_path / "a_file")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(evaluate, "run_episode", lambda *a: pytest.fail("an episode ran"))
    with pytest.raises(FileExistsError):
        evaluate.evaluate(config)


def test_command_line(tmp_path):
    tasks = _tasks_file(tmp_path)
    command = [
        sys.executable, "-m", "cmat_jax.evaluate", "--config", os.path.join(REPO_ROOT, "configs", "eval_dbbench.py"),
        f"--config.tasks={tasks}", "--config.agent=oracle", f"--config.workdir={tmp_path / 'cli'}",
        "--config.checker=enforce",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "overall_cat" in done.stdout
    with open(tmp_path / "cli" / "metrics.json") as f:
        assert json.load(f)["UPDATE_accuracy"] == 1.0
    bad = subprocess.run(
        command + ["--config.agent=nobody"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert bad.returncode != 0 and "registered agents: oracle" in bad.stderr


def test_default_tasks_are_the_dev_tasks_when_present():
    config = eval_dbbench.get_config()
    dev = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "dbbench", "dev.jsonl"))
    assert config.tasks == (dev if os.path.isfile(dev) else "")
    assert config.max_rounds == 15 and config.timeout_s == 2.0 and config.agent == "oracle"
