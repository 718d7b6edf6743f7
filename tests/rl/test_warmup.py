"""The warm start's demonstrations: the oracle's episodes; the engine opens a bounded number of databases at once."""

import pytest

from cmat_jax.agents import engine
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.user import User
from cmat_jax.data.tokenizer import load_tokenizer
from cmat_jax.demos import mistakes, warmup
from cmat_jax.demos.oracle import operation_reply
from cmat_jax.envs.sql.checker import Checker
from cmat_jax.envs.sql.database import Limits
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.taskgen.generate import generate_tasks
from cmat_jax.settings.run import parse_run


def test_chunked_demonstrations_equal_one_batch(monkeypatch):
    tasks = generate_tasks(12, 3, "lookup")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    whole = warmup.demonstrations(tasks, user, SqlEnvConfig())
    monkeypatch.setattr(engine, "MAX_OPEN_EPISODES", 5)  # 5 + 5 + 2 episodes
    chunked = warmup.demonstrations(tasks, user, SqlEnvConfig())
    assert len(whole) == 12
    assert [[m.to_dict() for m in c] for c in chunked] == [[m.to_dict() for m in c] for c in whole]
    # Each conversation is the opening (instructions, "Ok.", the task), the oracle's query, its output, the answer.
    for conversation in whole:
        assert [m.role for m in conversation] == ["user", "assistant", "user", "assistant", "user", "assistant"]
        assert conversation[3].content.startswith("Action: Operation")
        assert conversation[5].content.startswith("Action: Answer")


def dicts(conversations):
    return [[m.to_dict() for m in c] for c in conversations]


def dbbench_demonstrations(fraction, seed=0, count=24):
    tasks = generate_tasks(count, 4, "dbbench")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    return warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=fraction, seed=seed)


def test_recovery_demonstrations_add_the_mistake_and_its_error_to_the_plain_ones():
    plain = dbbench_demonstrations(0.0)
    recovering = dbbench_demonstrations(1.0)
    # Every generated task has a gold statement and a confirmed mistake: each one recovers.
    for before, after in zip(plain, recovering):
        assert [m.role for m in after] == ["user", "assistant", "user"] + ["assistant", "user"] * 2 + ["assistant"]
        mistake, error = after[3], after[4]
        assert mistake.content.startswith("Action: Operation\n```sql\n") and mistake.loss is False
        assert error.content.startswith(("1146 (42S02)", "1054 (42S22)", "1064 (42000)", "1105 (HY000)"))
        assert mistake.content != after[5].content
        # The rest is the plain demonstration: opening, the gold statement (no prose), its result, the answer.
        assert dicts([after[:3] + after[5:]]) == dicts([before])


def test_with_the_static_checker_a_recovery_shows_its_rejection_as_the_iterations_will():
    tasks = generate_tasks(24, 4, "dbbench")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    errors = dbbench_demonstrations(1.0)
    checked = warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=1.0, checker="static+learned")
    rejected = 0
    for task, by_mysql, by_checker in zip(tasks, errors, checked):
        # The same mistake and the same gold run: only the mistake's observation may differ.
        assert dicts([by_checker[:4] + by_checker[5:]]) == dicts([by_mysql[:4] + by_mysql[5:]])
        sql = by_checker[3].content.removeprefix("Action: Operation\n```sql\n").removesuffix("\n```")
        verdict = Checker.for_task(task).check(sql)
        assert by_checker[4].content == (by_mysql[4].content if verdict.ok else verdict.reason)
        rejected += not verdict.ok
    assert rejected >= 12  # most mistakes are a table or column name the Checker names right
    # The learned Checker has no scripted verdict: its demonstrations show MySQL's errors.
    assert dicts(warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=1.0, checker="learned")) \
        == dicts(errors)


def test_a_statement_timeout_a_loaded_machine_could_hit_never_reaches_a_demonstration():
    """Under a test suite's load the 2 s wall-clock limit cut an oracle statement, and its demonstration showed
    a timeout before an answer that follows from a result. Demonstrations are played with at least 60 s."""
    tasks = generate_tasks(8, 4, "dbbench")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    hurried = SqlEnvConfig(limits=Limits(timeout_s=1e-9))
    timed_out = 0
    for task in tasks:  # played in an episode, such a limit cuts the oracle's statements
        env = SqlEnv(hurried)
        env.reset(task)
        timed_out += env.step(operation_reply(mistakes.gold_statement(task))).info["error"] == "timeout"
        env.close()
    assert timed_out >= len(tasks) // 2
    assert dicts(warmup.demonstrations(tasks, user, hurried, recovery_fraction=0.5, reflection_fraction=0.25,
                                       tokenizer=load_tokenizer())) == \
        dicts(warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=0.5, reflection_fraction=0.25,
                                    tokenizer=load_tokenizer()))


def test_recovery_fraction_zero_is_the_plain_demonstrations_and_draws_are_seeded():
    tasks = generate_tasks(24, 4, "dbbench")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    assert dicts(warmup.demonstrations(tasks, user, SqlEnvConfig())) == dicts(dbbench_demonstrations(0.0, seed=9))
    half = dbbench_demonstrations(0.5, seed=1)
    assert dicts(half) == dicts(dbbench_demonstrations(0.5, seed=1))
    chosen = [len(c) == 8 for c in half]
    assert 4 <= sum(chosen) <= 20
    assert chosen != [len(c) == 8 for c in dbbench_demonstrations(0.5, seed=2)]


def test_a_fraction_outside_zero_to_one_is_refused():
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"recovery_fraction must be in \[0, 1\]"):
            dbbench_demonstrations(fraction, count=2)
    from cmat_jax.training.config import cmat_config
    config = cmat_config()
    config.train.recovery_fraction = 2.0
    with pytest.raises(ValueError, match=r"train\.recovery_fraction must be in \[0, 1\]"):
        parse_run(config)


def demonstrations_of_a_cmat_run(tmp_path, monkeypatch, **overrides):
    """(kwargs, conversations) of the warm-start demonstrations a CmatRun with `overrides` asks for: the real
    demonstrations with the run's arguments, then the run stops before its model is built."""
    from cmat_jax.rl import loop
    from tests.rl.test_cmat_loop import small_config

    class Stop(Exception):
        pass

    made = []

    def recorded(*args, **kwargs):
        made.append((kwargs, warmup.demonstrations(*args, **kwargs)))
        raise Stop

    monkeypatch.setattr(loop, "demonstrations", recorded)
    with pytest.raises(Stop):
        loop.CmatRun(parse_run(small_config(tmp_path, **overrides)))
    (made_once,) = made
    return made_once


def test_the_cmat_run_reads_train_recovery_fraction(tmp_path, monkeypatch):
    kwargs, conversations = demonstrations_of_a_cmat_run(tmp_path, monkeypatch, **{"train.recovery_fraction": 1.0})
    tokenizer = kwargs.pop("tokenizer")
    assert kwargs == {"recovery_fraction": 1.0, "seed": 0, "reflection_fraction": 0.0, "checker": "static"}
    assert tokenizer is not None
    # The training tasks whose oracle runs a statement open with an untrained mistake and its error.
    recovering = [c for c in conversations if len(c) == 8]
    assert recovering and all(c[3].loss is False for c in recovering)


def test_the_cmat_run_reads_train_reflection_fraction(tmp_path, monkeypatch):
    kwargs, conversations = demonstrations_of_a_cmat_run(tmp_path, monkeypatch, **{"train.reflection_fraction": 1.0})
    assert kwargs["reflection_fraction"] == 1.0 and kwargs["tokenizer"] is not None
    # Reflection tasks give a plan conversation: the engine's reflection prompt and the trained plan.
    plans = [c for c in conversations if len(c) == 2]
    assert plans and all(c[1].trains and c[1].content.startswith("The statement ") for c in plans)


def test_demonstrations_a_row_would_cut_are_refused_with_the_seq_len_to_set(tmp_path):
    from cmat_jax.data.tokenizer import load_tokenizer
    from cmat_jax.rl import loop
    from tests.rl.test_cmat_loop import small_config

    tasks = generate_tasks(16, 0, "lookup")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    tokenizer = load_tokenizer()
    warmup.check_lengths(warmup.demonstrations(tasks, user, SqlEnvConfig()), tokenizer, 256)  # 207-222 tokens
    recovering = warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=1.0)
    with pytest.raises(ValueError, match=r"of the 16 warm-start demonstrations are longer than a data\.seq_len=256 "
                                         r"row holds .*; set --config\.data\.seq_len=\d+ or more"):
        warmup.check_lengths(recovering, tokenizer, 256)
    warmup.check_lengths(recovering, tokenizer, 320)
    # A run refuses them before its first step.
    with pytest.raises(ValueError, match=r"data\.seq_len=64 row holds"):
        loop.CmatRun(parse_run(small_config(tmp_path, **{"data.seq_len": 64})))
