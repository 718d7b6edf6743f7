"""Typed settings (cmat_jax/settings/): every setting is checked before any work, each refusal is one line
naming the field, the value and what is accepted, and the name lists the settings accept are the ones the
code registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cmat_jax.settings import cmat as cmat_settings
from cmat_jax.settings import model as model_settings
from cmat_jax.settings import rollout as rollout_settings
from cmat_jax.settings import training as training_settings
from cmat_jax.settings.fields import SettingError
from cmat_jax.settings.run import parse_run
from cmat_jax.training.config import cmat_config
from tests.repo_configs import REPO
from tests.rl.test_cmat_loop import small_config
from tests.training.common import tiny_config


class ModelBuilt(AssertionError):
    """The run got as far as building its model (or its warm start) before refusing a setting."""


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Fails the test where a run would build its model or play its warm start's demonstrations."""
    from cmat_jax.rl import loop
    from cmat_jax.training import build

    def built(*args, **kwargs):
        raise ModelBuilt("the model or the warm start was built before the refusal")

    monkeypatch.setattr(build, "build_model", built)
    monkeypatch.setattr(loop, "demonstrations", built)


def start(config):
    """What `python -m cmat_jax.train` starts (train.start; train.py itself is not imported here, since its
    absl flags cannot be defined beside evaluate.py's in one test process)."""
    from cmat_jax.rl.loop import CmatRun
    from cmat_jax.training.trainer import Trainer

    settings = parse_run(config)
    return CmatRun(settings) if settings.mode == "cmat" else Trainer(settings)


def refusal(config) -> str:
    """The one-line message a run of `config` stops with, before its model is built."""
    with pytest.raises(SettingError) as refused:
        start(config)
    message = str(refused.value)
    assert "\n" not in message
    return message


# (field, value, what the message says is accepted); found by users, then every count that 0 would void.
CMAT_REFUSALS = [
    ("rollout.tasks_per_iteration", -1, "an integer >= 1"),
    ("rollout.tasks_per_iteration", 0, "an integer >= 1"),
    ("rl.rows", 0, "an integer >= 1"),
    ("rollout.max_new_tokens", 0, "an integer >= 1"),
    ("rl.learning_rate", -1.0, "a finite number > 0"),
    ("train.learning_rate", -1.0, "a finite number > 0"),
    ("rl.seq_len", 8, "expected rl.seq_len >= "),
    ("rollout.max_len", 16, "expected rollout.max_len >= "),
    ("rollout.group_size", 0, "an integer >= 1"),
    ("rollout.max_rounds", 0, "an integer >= 1"),
    ("rollout.top_p", 0.0, "in (0, 1]"),
    ("reflection.trials", 0, "an integer >= 1"),
    ("reflection.omega", 0, "an integer >= 1"),
    ("reflection.max_new_tokens", 0, "an integer >= 1"),
    ("checker.max_new_tokens", 0, "an integer >= 1"),
    ("rl.update_epochs", 0, "an integer >= 1"),
    ("rl.eval_every", 0, "an integer >= 1"),
    ("rl.iterations", -1, "an integer >= 0"),
    ("tasks.train_count", 0, "an integer >= 1"),
    ("tasks.eval_count", 0, "an integer >= 1"),
    ("tasks.demo_count", -1, "an integer >= 0"),
    ("rl.sft_twin_steps", -1, "an integer >= 0"),
    ("rl.statement_credit", -0.5, "a finite number >= 0"),
    ("rl.groups_per_update", -1, "an integer >= 0"),
    ("rl.max_sampling_rounds", -1, "an integer >= 0"),
    ("rollout.curriculum_window", 0, "an integer >= 1"),
    ("data.batch_size", 0, "an integer >= 1"),
    ("train.microbatches", 0, "an integer >= 1"),
    ("train.log_every", 0, "an integer >= 1"),
    ("checkpoint.every", 0, "an integer >= 1"),
    ("checkpoint.keep", 0, "an integer >= 1"),
    ("lora.rank", 0, "an integer >= 1"),
    ("mesh.data", 0, "an integer >= 1"),
    ("rl.objective", "sac", "choose from ppo, reinforce"),
    ("rollout.cache", "none", "choose from persistent, reprefill"),
    ("rollout.slots", -1, "an integer >= 0"),
    ("model.preset", "qwen_1_8", "unknown model preset 'qwen_1_8'; did you mean qwen_1_8b"),
    ("model.remat", "some", "choose from none, full"),
    ("model.decode_attention", "flash", "choose from xla, pallas"),
    ("tasks.generator_profile", "dbbench+huge", "choose from dbbench, tiny, lookup, hard, or join several with '+'"),
    ("tasks.generator_profile", "hard+hard", "names a profile twice"),
]


@pytest.mark.parametrize("field, value, accepted", CMAT_REFUSALS, ids=[f"{f}={v}" for f, v, _ in CMAT_REFUSALS])
def test_a_cmat_setting_that_cannot_run_is_refused_before_the_model_is_built(tmp_path, nothing_is_built, field,
                                                                            value, accepted):
    message = refusal(small_config(tmp_path / "run", **{field: value}))
    assert field in message and str(value) in message and accepted in message, message
    assert not (tmp_path / "run").exists()  # nothing written either


def test_reinforced_only_with_a_kl_penalty_is_refused(tmp_path, nothing_is_built):
    message = refusal(small_config(tmp_path / "run", **{"rl.reinforced_only": True, "rl.kl_coef": 0.1}))
    assert message.startswith("rl.reinforced_only is true but rl.kl_coef is 0.1") and "rl.kl_coef=0" in message


def test_both_warm_start_and_iterations_zero_is_refused(tmp_path, nothing_is_built):
    message = refusal(small_config(tmp_path / "run", **{"train.steps": 0, "rl.iterations": 0}))
    assert "train.steps and rl.iterations are both 0" in message


@pytest.mark.parametrize("field, value, accepted", [
    ("train.learning_rate", -1.0, "a finite number > 0"),
    ("train.steps", 0, "an integer >= 1"),
    ("data.seq_len", 0, "an integer >= 1"),
    ("train.decay", "step", "choose from cosine, linear, constant"),
])
def test_an_sft_setting_that_cannot_run_is_refused_before_the_model_is_built(tmp_path, nothing_is_built, field,
                                                                            value, accepted):
    message = refusal(tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{field: value}))
    assert field in message and str(value) in message and accepted in message, message


def test_the_mode_and_the_workdir_are_checked_first(tmp_path, nothing_is_built):
    config = small_config(tmp_path / "run", **{"rl.rows": 0})
    config.mode = "foo"  # today's message named data.agent, the first check of the CMAT loop
    assert refusal(config) == "mode is 'foo'; choose from sft, cmat"
    config.mode, config.workdir = "cmat", ""
    assert refusal(config).startswith("workdir is empty; set ")


def test_cmat_settings_in_an_sft_run_are_refused_as_unread(tmp_path, nothing_is_built):
    config = small_config(tmp_path / "run", **{"data.agent": "x.jsonl"})
    config.mode = "sft"
    message = refusal(config)
    field = message.split(" ")[0]
    assert field.split(".")[0] in ("tasks", "rollout", "reflection", "checker", "rl", "train"), message
    assert message == f"{field} is set, but a mode='sft' run never reads it (a CMAT setting: use mode='cmat'); remove it"


def test_parsing_leaves_the_config_as_it_was_and_records_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config("run", "data")
    before = config.to_json()
    settings = parse_run(config)
    assert config.to_json() == before
    assert settings.workdir == str(tmp_path / "run") and settings.data.agent == str(tmp_path / "data" / "agent.jsonl")
    assert json.loads(settings.source.to_json())["data"]["agent"] == settings.data.agent
    assert isinstance(settings.train.learning_rate, float) and settings.train.chunk_size is None


@pytest.mark.parametrize("argument, message", [
    ("--config.rl.rows=0", "error: rl.rows must be an integer >= 1 (rows per update batch), found 0"),
    ("--config.mode=foo", "error: mode is 'foo'; choose from sft, cmat"),
    ("--config.workdir=", "error: workdir is empty; set --config.workdir=DIR, the directory of the run"),
])
def test_the_cli_ends_a_refused_setting_in_one_line(tmp_path, argument, message):
    workdir = tmp_path / "run"
    arguments = [f"--config.workdir={workdir}", argument]
    cmd = [sys.executable, "-m", "cmat_jax.train", "--config", os.path.join(REPO, "configs", "cmat_tiny.py"),
           *arguments]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.stderr and not workdir.exists()


def test_a_cmat_runs_engines_sample_as_its_settings_say():
    """The training engine samples every role at rollout.temperature with the rollout's top-k / top-p (0 and
    1.0 are off); the evaluation engine is greedy."""
    from cmat_jax.agents.replies import ScriptedReplies
    from cmat_jax.demos.oracle import OracleAgent
    from cmat_jax.sampling.policy import SamplingPolicy
    from cmat_jax.rollout import build_rollout_engine

    config = cmat_config()
    config.model.random_init, config.train.steps = True, 1
    config.rollout.top_k, config.reflection.trials, config.checker.mode = 5, 2, "learned"
    cmat = parse_run(config).cmat
    source = ScriptedReplies(OracleAgent)
    engine = build_rollout_engine(cmat.engine(0.7), assistant=source, checker=source, reflector=source)
    assert engine.config.assistant == SamplingPolicy(64, 0.7, 5, None)
    assert engine.config.checker_sampling == SamplingPolicy(32, 0.7, 5, None)
    assert engine.config.reflection == SamplingPolicy(64, 0.7, 5, None)
    assert (engine.config.trials, engine.config.checker, engine.checker.model, engine.reflector) == (
        2, "learned", source, source)
    assert engine.environments.config.max_rounds == 15 and engine.prompts.budget == 1024 - 64
    greedy = build_rollout_engine(cmat.engine(0.0), assistant=source, checker=source, reflector=source)
    assert greedy.config.assistant.greedy


def test_the_accepted_names_are_the_registered_ones():
    from cmat_jax.agents import engine
    from cmat_jax.data import batching
    from cmat_jax.taskgen import generate
    from cmat_jax.models import attention, decode_attention, lora, transformer
    from cmat_jax.rl import advantages, loop, objectives

    assert model_settings.REMAT_NAMES == tuple(transformer.REMAT_POLICIES)
    assert model_settings.ATTENTION_IMPLS == attention.ATTENTION_IMPLS
    assert model_settings.DECODE_ATTENTION_IMPLS == decode_attention.DECODE_ATTENTION_IMPLS
    assert model_settings.LORA_TARGETS == lora.TARGET_NAMES
    assert (training_settings.DATA_MODES, training_settings.OVERLONG) == (batching.MODES, batching.OVERLONG)
    assert (rollout_settings.CHECKER_MODES, rollout_settings.CACHE_MODES) == (engine.CHECKER_MODES,
                                                                              engine.CACHE_MODES)
    assert rollout_settings.INSTRUCTIONS == tuple(loop.INSTRUCTIONS)
    assert sorted(cmat_settings.GENERATOR_PROFILES) == sorted(generate.PROFILES)
    assert sorted(cmat_settings.OBJECTIVES) == sorted(objectives.OBJECTIVES)
    assert sorted(cmat_settings.ADVANTAGES) == sorted(advantages.ADVANTAGES)
    assert cmat_settings.GROUP_BASELINES == advantages.GROUP_BASELINES
