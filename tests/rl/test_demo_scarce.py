"""The demonstration-scarce warm start (tasks.demo_count) and the SFT twin (rl.sft_twin) at toy scale."""

import json
import os
import re
import shutil

import pytest

from cmat_jax.demos import warmup
from cmat_jax.rl.loop import CmatRun
from cmat_jax.settings.run import parse_run
from tests import test_settings
from tests.rl.test_cmat_loop import read_metrics, run, small_config
from tests.test_settings import ModelBuilt, refusal

nothing_is_built = test_settings.nothing_is_built  # the fixture: refusals come before the model is built


def oracle_replies(config):
    """Task id -> the oracle's Assistant replies of that task (the text of its demonstration)."""
    from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
    from cmat_jax.agents.user import User
    from cmat_jax.envs.sql.env import SqlEnvConfig
    from cmat_jax.rl.tasks import task_pools

    tasks, _ = task_pools(parse_run(config).cmat.tasks)
    user = User(tasks, seed=0, instructions=SHORT_INSTRUCTIONS)
    replies = {}
    for task, conversation in zip(tasks, warmup.demonstrations(tasks, user, SqlEnvConfig())):
        replies[task.task_id] = [m.content for m in conversation[2:] if m.role == "assistant"]
    return [t.task_id for t in tasks], replies


def resumed_config(workdir, **overrides):
    config = small_config(workdir, **overrides)
    config.resume = True
    return config


def test_no_reward_only_task_reaches_a_training_row(tmp_path, monkeypatch):
    from cmat_jax.data import load_tokenizer
    from cmat_jax.rl.tasks import task_pools
    from cmat_jax.training import build
    from cmat_jax.training.run_state import RunState

    # A running-mean baseline (rl.advantage reinforce) masks no group, so the iterations' rows are trained even
    # when every sample of this barely warm-started model fails alike.
    overrides = {"tasks.demo_count": 3, "rl.iterations": 2, "rl.advantage": "reinforce"}
    config = small_config(tmp_path / "w", **overrides)
    rows, targets = [], []
    real = RunState.put_batch

    def spy(self, batch, **kwargs):  # every row any update sees, SFT and RL alike
        for i in range(batch["tokens"].shape[0]):
            rows.append(batch["tokens"][i])
            targets.append(batch["targets"][i][batch["loss_mask"][i] > 0])
        return real(self, batch, **kwargs)

    monkeypatch.setattr(RunState, "put_batch", spy)
    run(config)
    settings = parse_run(config)
    tokenizer = load_tokenizer(build.tokenizer_path(settings))
    decode = lambda ids: tokenizer.decode([int(t) for t in ids])  # noqa: E731
    seen, trained = [decode(r) for r in rows], [decode(t) for t in targets]
    ids, replies = oracle_replies(config)
    demos, reward_only = ids[:3], ids[3:]
    demo_texts = {text for task in demos for text in replies[task]}
    # The check can see a demonstration: every demonstration's replies are trained.
    assert all(any(text in row for row in trained) for task in demos for text in replies[task])
    # No reward-only task's oracle reply appears in any row, as context or as a target.
    leaked = [(task, text) for task in reward_only for text in replies[task]
              if text not in demo_texts and any(text in row for row in seen)]
    assert not leaked
    # The iterations did train on reward-only tasks: their questions are in the rows, as context.
    questions = {task.task_id: task.description for task in task_pools(settings.cmat.tasks)[0]}
    assert any(questions[task] in row for task in reward_only for row in seen[3 * 2:])
    with open(tmp_path / "w" / "warmup_demonstrations.jsonl", encoding="utf-8") as f:
        assert sum(1 for _ in f) == 3

    # The checkpoints record which tasks were demonstrations.
    cmat = CmatRun(parse_run(resumed_config(tmp_path / "w", **overrides)))
    try:
        for step in cmat.checkpointer.all_steps():
            assert cmat.state.restore(step)["demonstrations"] == demos
    finally:
        cmat.close()


@pytest.mark.parametrize("overrides, message", [
    ({"tasks.demo_count": -1}, r"tasks\.demo_count must be an integer >= 0 \(.*\), found -1"),
    ({"tasks.demo_count": 13}, r"tasks\.demo_count is 13, but the training pool holds 12 tasks"),
    ({"tasks.demo_count": 0}, r"tasks\.demo_count is 0, so the warm start has no demonstrations"),
    ({"tasks.demo_count": 2, "train.steps": 0}, r"tasks\.demo_count is 2 but train\.steps is 0"),
])
def test_a_bad_demo_count_is_refused_naming_the_field(tmp_path, nothing_is_built, overrides, message):
    assert re.search(message, refusal(small_config(tmp_path / "w", **overrides)))
    assert not (tmp_path / "w").exists()


def test_a_demo_count_past_a_task_file_is_refused_once_the_file_is_read(tmp_path, nothing_is_built):
    from cmat_jax.taskgen.generate import write_tasks

    path = tmp_path / "train.jsonl"
    write_tasks(path, n=5, seed=0, profile="tiny")
    message = refusal(small_config(tmp_path / "w", **{"tasks.train": str(path), "tasks.demo_count": 6}))
    assert message == (f"tasks.demo_count is 6, but the training pool holds 5 tasks; choose at most 5, or a larger "
                       f"pool (more tasks in {path})")
    assert not (tmp_path / "w").exists()


def test_a_mixed_generator_profile_interleaves_the_pools_and_shares_the_demonstrations(tmp_path):
    from cmat_jax.rl.tasks import split_demonstrations, task_pools
    from cmat_jax.taskgen.generate import generate_tasks

    t = parse_run(small_config(tmp_path / "w", **{"tasks.generator_profile": "tiny+lookup", "tasks.train_count": 6,
                                                  "tasks.demo_count": 4})).cmat.tasks
    train, evaluation = task_pools(t)
    tiny, lookup = generate_tasks(3, t.train_seed, "tiny"), generate_tasks(3, t.train_seed, "lookup")
    assert train == [tiny[0], lookup[0], tiny[1], lookup[1], tiny[2], lookup[2]]
    assert [task.task_id.split("-")[1] for task in split_demonstrations(train, 4)[0]] == ["tiny", "lookup"] * 2
    assert {task.task_id.split("-")[1] for task in evaluation} == {"tiny", "lookup"}


def test_demo_count_zero_without_a_warm_start_is_accepted(tmp_path):
    from cmat_jax.rl.tasks import split_demonstrations

    settings = parse_run(small_config(tmp_path / "w", **{"tasks.demo_count": 0, "train.steps": 0}))
    assert settings.cmat.tasks.demo_count == 0
    assert split_demonstrations(list(range(5)), None) == (list(range(5)), [])
    assert split_demonstrations(list(range(5)), 2) == ([0, 1], [2, 3, 4])


@pytest.mark.parametrize("overrides, message", [
    ({"train.steps": 0}, "rl.sft_twin is true but train.steps is 0"),
    ({"rl.iterations": 0}, "rl.sft_twin is true but rl.iterations is 0"),
    ({"rl.sft_twin_steps": -2}, "rl.sft_twin_steps must be an integer >= 0"),
    ({"rl.sft_twin": False, "rl.sft_twin_steps": 4}, "rl.sft_twin_steps is 4 but rl.sft_twin is false"),
])
def test_bad_twin_settings_are_refused(tmp_path, nothing_is_built, overrides, message):
    assert message in refusal(small_config(tmp_path / "w", **{"rl.sft_twin": True, **overrides}))
    assert not (tmp_path / "w").exists()


def without_twin_timings(records):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "step_s", "eval_s", "train_s")}
            for r in records]


def twin_ends(workdir):
    """(the twin's SFT step counts, its last evaluation)."""
    twin = read_metrics(workdir / "sft_twin")
    return [r["twin_step"] for r in twin if r["phase"] == "sft"], [r for r in twin if r["phase"] == "eval"][-1]


def test_the_sft_twin_continues_the_warm_start_and_is_summarised(tmp_path, monkeypatch):
    import jax
    import numpy as np

    from cmat_jax.rl import sft_twin
    from cmat_jax.training import build

    overrides = {"tasks.demo_count": 4, "rl.sft_twin": True, "rl.sft_twin_steps": 4, "checkpoint.keep": 10}
    workdir = tmp_path / "w"
    started = []
    real_restore = sft_twin.SftTwin._restore

    def spy(self, state, restore_host):
        real_restore(self, state, restore_host)
        started.append(jax.device_get(state.adapters["assistant"]))

    monkeypatch.setattr(sft_twin.SftTwin, "_restore", spy)
    run(small_config(workdir, **{**overrides, "rl.iterations": 1}))
    steps, last = twin_ends(workdir)
    assert steps == [1, 2, 3, 4] and last["final"] and last["beside_iteration"] == 1
    # Its end is saved beside its copy of the warm start, and <workdir>/sft_twin reads as a workdir.
    from cmat_jax.training.workdir import load_trained_model
    assert sorted(int(p) for p in os.listdir(workdir / "sft_twin" / "checkpoints")) == [3, 7]
    twin_model, twin_config, twin_step = load_trained_model(str(workdir / "sft_twin"))
    assert twin_step == 7 and twin_config.checkpoint.directory == "" and twin_config.rl.sft_twin
    # Resumed for one more iteration, the run goes on from its checkpoint and the twin is replayed beside it.
    run(resumed_config(workdir, **overrides))
    assert [(r["phase"], r["iteration"]) for r in read_metrics(workdir)][-4:] == [
        ("rl", 1), ("eval", 1), ("rl", 2), ("eval", 2)]
    twin = read_metrics(workdir / "sft_twin")
    steps, last = twin_ends(workdir)
    assert steps == [1, 2, 3, 4] and last["final"] and last["twin_step"] == 4 and last["beside_iteration"] == 2

    # It started from the warm start's adapters (the run's checkpoint at train.steps), both times.
    cmat = CmatRun(parse_run(resumed_config(workdir, **overrides)))
    try:
        cmat.state.restore(3)
        warm = jax.device_get(cmat.state.adapters["assistant"])
    finally:
        cmat.close()
    assert len(started) == 2
    for adapters in started:
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(adapters), jax.tree.leaves(warm)))

    with open(workdir / "summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["twin"]["steps"] == 4 and "cmat_minus_twin_points" in summary
    assert "SFT twin, 4 more steps" in (workdir / "summary.txt").read_text()

    # A run killed during its twin replays the twin from the warm start on resume, to the same records.
    lines = (workdir / "sft_twin" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (workdir / "sft_twin" / "metrics.jsonl").write_text("".join(lines[:2]))
    run(resumed_config(workdir, **overrides))
    assert without_twin_timings(read_metrics(workdir / "sft_twin")) == without_twin_timings(twin)
    assert os.path.isfile(workdir / "success.png")

    # Without the twin's copy of the warm start a resume is refused before the model is built, and leaves the
    # workdir's lock free.
    copies = workdir / "sft_twin" / "checkpoints"
    shutil.move(copies, tmp_path / "copies")
    def built(*args, **kwargs):
        raise ModelBuilt("the model was built before the refusal")

    with monkeypatch.context() as patched:
        patched.setattr(build, "build_model", built)
        with pytest.raises(FileNotFoundError, match=r"the twin starts from its copy of the warm start \(step 3\)"):
            CmatRun(parse_run(resumed_config(workdir, **overrides)))
    assert not (workdir / "run.lock").exists()
    shutil.rmtree(copies, ignore_errors=True)  # what the refused run's twin may have created
    shutil.move(tmp_path / "copies", copies)

    # A fresh run that replaces the workdir's run (overwrite) starts its twin empty: the old copy and records go.
    fresh = small_config(workdir, **overrides)
    fresh.overwrite = True
    cmat = CmatRun(parse_run(fresh))
    try:
        assert cmat.twin.checkpointer.all_steps() == []
        assert (workdir / "sft_twin" / "metrics.jsonl").read_text() == ""
    finally:
        cmat.close()


def test_the_twin_plans_as_many_warm_start_steps_as_the_iterations_took():
    from cmat_jax.rl.sft_twin import plan_twin

    history = [{"phase": "sft", "step_s": s} for s in (5.0, 0.1, 0.1, 0.2)]  # the first step compiles
    history += [{"phase": "eval", "iteration": 0},
                {"phase": "rl", "iteration": 1, "rollout_s": 1.5, "update_s": 0.5},
                {"phase": "eval", "iteration": 1},
                {"phase": "rl", "iteration": 2, "rollout_s": 1.5, "update_s": 1.5},
                {"phase": "eval", "iteration": 2}]
    # 5 s of iterations at the warm start's median 0.2 s a step (sorted 0.1, 0.1, 0.2, 5.0): 25 steps, evaluated
    # after 10 (the first iteration's 2 of 5 s) and at the end.
    assert plan_twin(history) == {"steps": 25, "marks": [[10, 1], [25, 2]]}
    assert plan_twin(history, fixed_steps=5) == {"steps": 5, "marks": [[2, 1], [5, 2]]}
