"""The evaluation CLI with the oracle: config, agent registry, refusals, metrics.json, episodes.jsonl and the table."""

import json
import os
import subprocess
import sys

import pytest

from cmat_jax import evaluate
from cmat_jax.agents.engine import RolloutEngine
from cmat_jax.agents.trajectory import Trajectory
from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS
from tests.envs.sql_helpers import REPO_ROOT, make_record, write_jsonl
from tests.repo_configs import config_module

eval_dbbench = config_module("eval_dbbench")


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
    assert {e.pop("variant") for e in episodes} == {"full"}
    assert [Trajectory.from_json(e).to_json() for e in episodes] == episodes
    assert episodes[2]["turns"][0]["verdict"] == {"source": "static", "ok": True, "reason": "", "rule": ""}
    assert episodes[2]["turns"][0]["role"] == "assistant"
    assert episodes[2]["turns"][0]["text"].startswith("Action: Operation")
    assert [e["status"] for e in episodes] == ["correct", "correct", "correct", "wrong"]
    table = evaluate.format_table(metrics)
    assert "overall_cat" in table and "INSERT" in table


def test_unknown_agent_and_missing_tasks_are_clear_errors(tmp_path):
    config = eval_dbbench.get_config()
    config.tasks = str(_tasks_file(tmp_path))
    config.workdir = str(tmp_path / "out")
    config.agent = "gpt"
    with pytest.raises(ValueError, match="registered agents: model, oracle"):
        evaluate.evaluate(config)
    config.agent, config.tasks = "oracle", ""
    with pytest.raises(ValueError, match="--config.tasks"):
        evaluate.evaluate(config)


def test_a_workdir_that_cannot_be_made_fails_before_any_episode(tmp_path, monkeypatch):
    config = eval_dbbench.get_config()
    config.tasks = str(_tasks_file(tmp_path))
    config.workdir = str(tmp_path / "a_file")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(RolloutEngine, "run", lambda *a, **k: pytest.fail("an episode ran"))
    with pytest.raises(FileExistsError):
        evaluate.evaluate(config)


def test_command_line(tmp_path):
    tasks = _tasks_file(tmp_path)
    command = [
        sys.executable, "-m", "cmat_jax.evaluate", "--config", os.path.join(REPO_ROOT, "configs", "eval_dbbench.py"),
        f"--config.tasks={tasks}", "--config.agent=oracle", f"--config.workdir={tmp_path / 'cli'}",
        "--config.checker=static",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "overall_cat" in done.stdout
    with open(tmp_path / "cli" / "metrics.json") as f:
        assert json.load(f)["UPDATE_accuracy"] == 1.0
    bad = subprocess.run(
        command + ["--config.agent=nobody"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert bad.returncode != 0 and "registered agents: model, oracle" in bad.stderr
    # A model agent without a model: one line that names the three choices, no traceback.
    no_model = subprocess.run(command + ["--config.agent=model"], capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=120)
    assert no_model.returncode != 0 and "Traceback" not in no_model.stderr
    assert no_model.stderr.strip().splitlines()[-1].startswith("error: --config.agent=model needs exactly one of")


def test_default_tasks_are_the_packaged_dev_tasks():
    config = eval_dbbench.get_config()
    assert config.tasks == DBBENCH_DEV_TASKS and os.path.isfile(config.tasks)
    assert config.max_rounds == 15 and config.timeout_s == 2.0 and config.agent == "oracle"


def test_the_oracle_scores_one_on_the_packaged_dev_tasks_through_the_engine(tmp_path):
    config = eval_dbbench.get_config()
    config.workdir = str(tmp_path / "dev")
    metrics = evaluate.evaluate(config)
    assert metrics["episodes"] == 60 and metrics["correct"] == 60
    assert metrics["overall_cat_accuracy"] == 1.0 and metrics["per_trial"][0]["accuracy"] == 1.0
    assert metrics["statuses"]["correct"] == 60 and metrics["model"] is None
    with open(tmp_path / "dev" / "episodes.jsonl") as f:
        assert sum(1 for _ in f) == 60


@pytest.mark.parametrize("field, value, message", [
    ("model.preset", "tiny", "model.preset='tiny' would be ignored: the oracle agent runs no model"),
    ("sampling.max_new_tokens", 32, "sampling.max_new_tokens=32 would be ignored"),
    ("instructions", "short", "instructions='short' would be ignored"),
    ("reflection.trials", 2, "needs a model to write reflections; the oracle cannot"),
    ("reflection.omega", 2, "reflection.omega=2 would be ignored: no variant writes reflections"),
    ("checker", "learned", "needs a model for the Checker role"),
    ("checker", "static+learned", "needs a model for the Checker role"),
    ("checker", "enforce", "choose from off, static, learned, static\\+learned"),
    ("ablations", True, "'no reflection' variant would repeat the configured one"),
    ("max_tasks", -1, "max_tasks must be an int >= 0"),
])  # fmt: skip
def test_settings_the_oracle_would_ignore_or_cannot_run_are_refused(tmp_path, field, value, message):
    config = eval_dbbench.get_config()
    config.workdir = str(tmp_path / "never")
    node = config
    *parents, leaf = field.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate(config)
    assert not (tmp_path / "never").exists()  # refused before anything ran or was written
