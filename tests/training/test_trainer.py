"""The trainer loop: kill-and-resume, refusals, non-finite handling, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmat_jax.settings.run import parse_run
from cmat_jax.training.metrics import truncate_metrics_after
from cmat_jax.training.driver import NonFiniteError
from cmat_jax.training.run_state import steps_change
from cmat_jax.training.trainer import Trainer
from tests.training.common import KilledAt, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_kill_and_resume_gives_the_same_losses(tmp_path):
    data = str(tmp_path / "data")
    full = Trainer(parse_run(tiny_config(str(tmp_path / "full"), data)))
    expected = [h["loss"] for h in full.train()]
    full.close()
    assert full.checkpointer.all_steps() == [2, 4, 6]  # every 2 steps, not also the first

    workdir = str(tmp_path / "killed")
    killed = Trainer(parse_run(tiny_config(workdir, data)))
    killed.batches = KilledAt(killed.batches, 6)  # dies while step 5 is in flight, after checkpoint 4
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    killed.close()
    assert killed.checkpointer.latest_step() == 4

    with pytest.raises(FileExistsError, match="resume"):
        Trainer(parse_run(tiny_config(workdir, data)))
    with pytest.raises(ValueError, match="train.learning_rate"):
        Trainer(parse_run(tiny_config(workdir, data, **{"resume": True, "train.learning_rate": 5e-3})))
    with pytest.raises(ValueError, match="train.steps: saved 6, now 12"):  # the cosine decay would stretch
        Trainer(parse_run(tiny_config(workdir, data, **{"resume": True, "train.steps": 12})))

    resumed = Trainer(parse_run(tiny_config(workdir, data, resume=True)))
    assert resumed.step == 4
    history = resumed.train()
    resumed.close()
    assert [h["loss"] for h in history] == expected[4:]
    logged = _metrics(workdir)
    assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in logged] == [m["loss"] for m in _metrics(str(tmp_path / "full"))]
    for key in ("loss", "learning_rate", "grad_norm", "tokens_per_s"):
        assert all(isinstance(m[key], float) for m in logged), key


def test_train_steps_may_change_on_resume_only_where_the_schedule_allows():
    cosine = {"steps": 6, "decay": "cosine", "warmup_steps": 2}
    assert steps_change(cosine, cosine) == []
    assert "train.steps: saved 6, now 12" in steps_change(cosine, dict(cosine, steps=12))[0]
    constant = dict(cosine, decay="constant")
    assert steps_change(constant, dict(constant, steps=12)) == []
    assert steps_change(dict(constant, steps=1), dict(constant, steps=12)) != []  # warmup was cut to 1 step


def test_data_settings_that_would_be_ignored_are_refused(tmp_path):
    packed_with_buckets = tiny_config(str(tmp_path / "a"), str(tmp_path / "data"), **{"data.bucket_lengths": (32, 64)})
    with pytest.raises(ValueError, match="data.mode is 'packed'"):
        parse_run(packed_with_buckets)
    unused_general = tiny_config(str(tmp_path / "b"), str(tmp_path / "data"), **{"data.agent_fraction": 1.0})
    with pytest.raises(ValueError, match="never be drawn"):
        parse_run(unused_general)


def test_paths_are_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(parse_run(tiny_config("run", "data", **{"train.steps": 1})))
    trainer.close()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert recorded["agent"] == str(tmp_path / "data" / "agent.jsonl")
    assert recorded["general"] == str(tmp_path / "data" / "general.jsonl")


def test_resume_drops_a_partial_last_metrics_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    truncate_metrics_after(str(path), 2)
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    path.write_text('{"step": 1, "loss": 2.0}\n{"ste\n{"step": 2, "loss": 1.5}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        truncate_metrics_after(str(path), 2)


def _poison(trainer):
    """NaN in the frozen embedding: every loss and gradient becomes NaN."""
    table = trainer.frozen["embed"]["table"]
    table[...] = jnp.full(table.shape, jnp.nan, table.dtype)


def test_non_finite_stop_names_the_step_and_saves_nothing(tmp_path):
    trainer = Trainer(parse_run(tiny_config(str(tmp_path / "run"), str(tmp_path / "data"),
                                            **{"data.batch_size": 2})))
    _poison(trainer)
    with pytest.raises(NonFiniteError, match="step 1 "):
        trainer.train()
    trainer.close()
    assert trainer.checkpointer.latest_step() is None


def test_non_finite_skip_keeps_finite_adapters(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{
        "data.batch_size": 2, "train.steps": 2, "train.nonfinite": "skip"})
    trainer = Trainer(parse_run(config))
    initial = jax.tree.map(np.asarray, trainer.lora)
    _poison(trainer)
    history = trainer.train()
    assert [h["skipped"] for h in history] == [1.0, 1.0]
    assert trainer.skipped_steps == 2
    assert [m["loss"] for m in _metrics(config.workdir)] == [None, None]
    saved = trainer.checkpointer.restore_adapters(2, trainer.lora, trainer.lora_shardings)
    for leaf, before in zip(jax.tree.leaves(saved), jax.tree.leaves(initial)):
        np.testing.assert_array_equal(leaf, before)
    trainer.checkpointer.close()


def test_cli_runs_the_tiny_config(tmp_path):
    workdir = tmp_path / "cli"
    cmd = [sys.executable, "-m", "cmat_jax.train", "--config", os.path.join(REPO, "configs", "sft_tiny.py"),
           "--config.train.steps=3", "--config.checkpoint.every=2", "--config.data.batch_size=2",
           f"--config.workdir={workdir}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = _metrics(str(workdir))
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert all(np.isfinite(m["loss"]) and m["tokens_per_s"] > 0 for m in logged)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 3


def test_cli_reports_a_malformed_data_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   '{"messages": [{"role": "user", "content": "unterminated"\n')
    cmd = [sys.executable, "-m", "cmat_jax.train", "--config", os.path.join(REPO, "configs", "sft_tiny.py"),
           f"--config.data.agent={bad}", "--config.data.general=", "--config.data.agent_fraction=1.0",
           f"--config.workdir={tmp_path / 'run'}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{bad}:2" in last
    assert "Traceback" not in result.stderr
