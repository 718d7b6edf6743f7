"""The CMAT loop end to end at toy scale: phases, files, resume to identical metrics, refused settings."""

import json
import os

import pytest

from cmat_jax.rl.loop import CmatRun, without_timings
from cmat_jax.settings.run import parse_run
from cmat_jax.training.config import cmat_config


def small_config(workdir, **overrides):
    c = cmat_config()
    c.workdir = str(workdir)
    c.model.random_init = True
    c.model.preset = "tiny"
    c.model.init_std = 0.15
    c.lora.rank = 4
    c.tasks.train_count = 12
    c.tasks.eval_count = 6
    c.train.steps = 3
    c.train.warmup_steps = 1
    c.data.batch_size = 2
    c.data.seq_len = 256
    c.rollout.instructions = "short"
    c.rollout.tasks_per_iteration = 2
    c.rollout.group_size = 2
    c.rollout.max_new_tokens = 8
    c.rollout.temperature = 1.0
    c.rollout.max_len = 256
    c.rl.iterations = 2
    c.rl.rows = 2
    c.rl.seq_len = 256
    c.rl.eval_every = 1
    c.checkpoint.every = 1
    c.checkpoint.async_save = False
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def run(config):
    cmat = CmatRun(parse_run(config))
    try:
        return cmat.run()
    finally:
        cmat.close()


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_loop_writes_every_phase_and_resumes_to_identical_metrics(tmp_path):
    whole = tmp_path / "whole"
    run(small_config(whole))
    records = read_metrics(whole)
    phases = [(r["phase"], r["iteration"]) for r in records]
    assert phases == [("sft", 0)] * 3 + [("eval", 0), ("rl", 1), ("eval", 1), ("rl", 2), ("eval", 2)]
    rl = [r for r in records if r["phase"] == "rl"]
    for key in ("success_rate", "reward_mean", "format_failure_rate", "checker_block_rate", "zero_adv_frac",
                "kl", "entropy", "clip_frac", "tokens_per_s", "rollout_s", "update_s"):
        assert key in rl[0], key
    assert os.path.isfile(whole / "success.png")
    assert os.listdir(whole / "tensorboard")
    with open(whole / "warmup_demonstrations.jsonl", encoding="utf-8") as f:
        assert sum(1 for _ in f) == 12

    # The same run stopped after one iteration and resumed equals the uninterrupted one.
    parts = tmp_path / "parts"
    run(small_config(parts, **{"rl.iterations": 1}))
    resumed = small_config(parts)
    resumed.resume = True
    run(resumed)
    assert without_timings(read_metrics(parts)) == without_timings(records)


@pytest.mark.parametrize("overrides, message", [
    ({"rl.objective": "sac"}, "rl.objective is 'sac'"),
    ({"rl.advantage": "gae"}, "rl.advantage is 'gae'"),
    ({"rollout.group_size": 1}, "rollout.group_size must be >= 2 for grpo"),
    ({"checker.train": True}, "checker.train is true but checker.mode is 'static'"),
    ({"data.agent": "x.jsonl"}, "data.agent is set"),
    ({"rollout.instructions": "long"}, "rollout.instructions is 'long'"),
    ({"tasks.eval_seed": 0}, "would be the training tasks"),
])
def test_bad_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        CmatRun(parse_run(small_config(tmp_path / "w", **overrides)))


@pytest.fixture(scope="module")
def two_role_run(tmp_path_factory):
    """A finished run that trained the Assistant's and the learned Checker's adapters."""
    workdir = tmp_path_factory.mktemp("two_roles") / "run"
    run(small_config(workdir, **{"checker.mode": "static+learned", "checker.train": True, "rl.iterations": 1,
                                 "train.learning_rate": 2e-2, "lora.targets": "q|v|o|up|down"}))
    records = read_metrics(workdir)
    assert any("checker_loss" in r or "checker_zero_adv_frac" in r for r in records if r["phase"] == "rl")
    return workdir


def test_export_writes_the_assistant_merged_and_one_peft_adapter_per_role(tmp_path, two_role_run):
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    import peft  # a test extra: the export must load in peft, never skip
    from cmat_jax.training.workdir import load_trained_model

    workdir = two_role_run

    from tools import export_hf as tool

    merged_dir, peft_dir = str(tmp_path / "merged"), str(tmp_path / "adapters")
    tool.main(["--workdir", str(workdir), "--merged", merged_dir, "--peft", peft_dir])
    assert sorted(os.listdir(peft_dir)) == ["assistant", "checker"]

    tokens = np.random.default_rng(0).integers(0, 1024, (2, 11)).astype(np.int32)
    base = transformers.AutoModelForCausalLM.from_pretrained(peft_dir + "_base", dtype=torch.float32).eval()
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        assistant = np.asarray(load_trained_model(str(workdir))[0](jnp.asarray(tokens))[0])
        assert np.abs(merged(torch.tensor(tokens)).logits.numpy() - assistant).max() <= 1e-4
        for role in ("assistant", "checker"):
            ours = np.asarray(load_trained_model(str(workdir), role=role)[0](jnp.asarray(tokens))[0])
            adapted = peft.PeftModel.from_pretrained(base, os.path.join(peft_dir, role)).eval()
            assert np.abs(adapted(torch.tensor(tokens)).logits.numpy() - ours).max() <= 1e-4
            base = adapted.unload()


def test_evaluate_plays_a_cmat_workdir_with_each_roles_adapter(tmp_path, two_role_run):
    import jax
    import numpy as np
    from flax import nnx

    from cmat_jax import eval_config, evaluate
    from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS
    from cmat_jax.training.workdir import load_trained_model

    workdir = str(two_role_run)
    config = eval_config.default_config()
    config.agent, config.model.workdir, config.workdir = "model", workdir, str(tmp_path / "eval")
    config.tasks, config.max_tasks, config.checker = DBBENCH_DEV_TASKS, 2, "static+learned"
    config.reflection.trials, config.sampling.max_new_tokens, config.sampling.max_len = 1, 8, 1024
    config.sampling.checker_max_new_tokens = 4

    players = evaluate.make_players(eval_config.resolve(config))
    played = {role: jax.tree.leaves(players.weights[role]) for role in ("assistant", "checker")}
    assert not all(np.array_equal(a, b) for a, b in zip(played["assistant"], played["checker"]))
    for role in ("assistant", "checker"):  # each role plays with its own trained adapter
        saved = jax.tree.leaves(nnx.state(load_trained_model(workdir, role=role)[0]))
        assert all(np.array_equal(a, b) for a, b in zip(played[role], saved))
    metrics = evaluate.evaluate(config)
    assert metrics["model"]["mode"] == "cmat" and metrics["episodes"] == 2
    # instructions '' is the run's own (rollout.instructions short), the protocol its adapters learned.
    assert metrics["variant"]["instructions"] == "short"
    config.instructions = "dbbench"
    assert eval_config.resolve(config).instructions == "dbbench"



def test_the_cmat_run_reads_rollout_unroll_decode_layers(tmp_path, monkeypatch):
    from cmat_jax.rl import loop
    from tests.sampler_capture import sampler_config_of

    for unroll in (False, True):
        config = small_config(tmp_path / str(unroll), **{"rollout.unroll_decode_layers": unroll})
        built = sampler_config_of(monkeypatch, loop, lambda: loop.CmatRun(parse_run(config)))
        assert built.unroll_decode_layers is unroll


@pytest.mark.parametrize("positive_only", [False, True])
def test_rl_positive_only_reaches_the_advantages(tmp_path, monkeypatch, positive_only):
    from cmat_jax.rl import loop

    seen = []
    real = loop.episode_lib.training_segments

    def spy(*args, **kwargs):
        seen.append(kwargs["positive_only"])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop.episode_lib, "training_segments", spy)
    run(small_config(tmp_path, **{"rl.positive_only": positive_only, "rl.iterations": 1, "train.steps": 1}))
    assert seen == [positive_only]


@pytest.mark.parametrize("on", [False, True])
def test_reward_settings_rewrite_the_rewards_before_the_update(tmp_path, monkeypatch, on):
    """rl.grounded_reward and rl.statement_credit reach the iteration's trajectories, and only when set."""
    from cmat_jax.rl import loop

    seen = []
    for rewrite in ("withhold_luck", "add_statement_credit"):
        monkeypatch.setattr(loop, rewrite, lambda trajectories, *args, name=rewrite: seen.append((name, args)))
    run(small_config(tmp_path, **{"rl.grounded_reward": on, "rl.statement_credit": 0.2 if on else 0.0,
                                  "rl.iterations": 1, "train.steps": 1}))
    assert seen == ([("withhold_luck", ()), ("add_statement_credit", (0.2,))] if on else [])
