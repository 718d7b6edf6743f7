"""cmat_jax/demos/reflections.py: a failed trial, the engine's reflection call with a template plan, the retry."""

import dataclasses
import functools
import json

import pytest

from cmat_jax.agents.memory import MEMORY_HEADER
from cmat_jax.agents.prompts import REFLECTION_INSTRUCTIONS, SHORT_INSTRUCTIONS
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, REFLECTION_ROLE
from cmat_jax.agents.user import User
from cmat_jax.data.tokenizer import decode_ids, load_tokenizer, render_chat
from cmat_jax.demos import mistakes
from cmat_jax.demos import reflections as reflection_demos
from cmat_jax.demos import warmup
from cmat_jax.envs.sql.env import SqlEnvConfig
from cmat_jax.taskgen.generate import generate_tasks
from cmat_jax.settings.run import parse_run

TASKS = generate_tasks(24, 4, "dbbench")
USER = User(TASKS, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)


@functools.lru_cache(maxsize=1)
def tokenizer():
    return load_tokenizer()


def dicts(conversations):
    return [[m.to_dict() for m in c] for c in conversations]


def demos(reflection, recovery=0.0, seed=0, tasks=TASKS):
    user = USER if tasks is TASKS else User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    return warmup.demonstrations(tasks, user, SqlEnvConfig(), recovery_fraction=recovery, seed=seed,
                                 reflection_fraction=reflection, tokenizer=tokenizer())


@functools.lru_cache(maxsize=1)
def reflecting():
    """Every generated task played as a reflection demonstration (seed 0)."""
    return demos(1.0)


def split(conversations, tasks, chosen):
    """Task id -> its conversations (three for a reflection task, one otherwise), in task order."""
    out, at = {}, 0
    for task in tasks:
        n = 3 if task.task_id in chosen else 1
        out[task.task_id], at = conversations[at:at + n], at + n
    assert at == len(conversations)
    return out


def test_every_chosen_task_fails_its_first_trial_and_solves_the_retry():
    chosen = reflection_demos.reflection_mistakes(TASKS, 1.0, 0, SqlEnvConfig())
    assert set(chosen) == {t.task_id for t in TASKS}  # every generated task has a confirmed mistake
    assert {m.kind for m in chosen.values()} == set(mistakes.KINDS)
    played = reflection_demos.play_reflections(TASKS, chosen, USER, SqlEnvConfig(), tokenizer())
    assert set(played) == set(chosen)
    for task_id, (first, second) in played.items():
        assert (first.trial, second.trial) == (0, 1)
        assert not first.correct and second.correct
        mistaken, answer = first.role_turns(ASSISTANT_ROLE)
        assert chosen[task_id].sql in mistaken.text and mistaken.info["error"] is not None
        assert answer.text == f"Action: Answer\nFinal Answer: [{mistaken.observation.split(':')[0]!r}]"
        reflection, = first.role_turns(REFLECTION_ROLE)
        assert reflection.text == reflection_demos.reflection_plan(chosen[task_id])
        assert second.memory_shown == [reflection.text]


def test_the_three_conversations_of_a_task_and_what_they_train():
    chosen = reflection_demos.reflection_mistakes(TASKS, 1.0, 0, SqlEnvConfig())
    plain = split(demos(0.0), TASKS, {})
    conversations = split(reflecting(), TASKS, chosen)
    for task in TASKS:
        failed, reflection, retry = conversations[task.task_id]
        # Trial 1: the opening, the mistake, its error, the error's code as the answer; nothing trained.
        assert [m.role for m in failed] == ["user", "assistant", "user", "assistant", "user", "assistant"]
        assert not any(m.trains for m in failed)
        assert chosen[task.task_id].sql in failed[3].content
        assert failed[5].content.startswith("Action: Answer\nFinal Answer: ['")
        # The reflection: its prompt shows the failed attempt; the plan is trained.
        assert [m.role for m in reflection] == ["user", "assistant"] and reflection[1].trains
        assert reflection[0].content.startswith(REFLECTION_INSTRUCTIONS) and task.prompt in reflection[0].content
        assert failed[4].content in reflection[0].content
        # Trial 2: the plain demonstration with the plan shown as memory before the task.
        plan = reflection[1].content
        assert retry[2].content == f"{MEMORY_HEADER}\nTrial 1:\n{plan}\n\n{plain[task.task_id][0][2].content}"
        assert dicts([retry[:2] + retry[3:]]) == dicts([plain[task.task_id][0][:2] + plain[task.task_id][0][3:]])
        assert [m.trains for m in retry if m.role == "assistant"] == [False] + [True] * (len(retry) // 2 - 1)


def test_the_plan_names_the_wrong_and_the_right_name_of_each_kind():
    chosen = reflection_demos.reflection_mistakes(TASKS, 1.0, 0, SqlEnvConfig())
    by_task = {t.task_id: t for t in TASKS}
    for task_id, mistake in chosen.items():
        task, plan = by_task[task_id], reflection_demos.reflection_plan(mistake)
        right = "`" + mistake.right + "`"
        assert mistake.wrong in mistake.sql and mistake.wrong in plan
        assert f"named {right}:" in plan or f"Write it as {right}" in plan
        if mistake.kind == "table":
            assert mistake.right == task.table_name and "table name" in plan
        else:
            assert mistake.right in task.columns and "column" in plan
        if mistake.kind == "unquoted":
            assert mistake.wrong == mistake.right and "without backquotes" in plan
        else:
            assert mistake.wrong != mistake.right
            assert mistake.wrong not in mistakes.gold_statement(task).replace(mistake.right, "")
        # Backquotes are asked for exactly when the right name needs them.
        assert ("in backquotes," in plan) == (not mistakes.plain_name(mistake.right))
    examples = {m.kind: reflection_demos.reflection_plan(m) for m in chosen.values()}
    assert examples.keys() == set(mistakes.KINDS)


def test_the_written_conversations_are_what_the_engine_showed():
    chosen = reflection_demos.reflection_mistakes(TASKS, 1.0, 0, SqlEnvConfig())
    played = reflection_demos.play_reflections(TASKS, chosen, USER, SqlEnvConfig(), tokenizer())
    conversations = split(reflecting(), TASKS, chosen)
    shown = lambda ids: decode_ids(tokenizer(), ids)  # noqa: E731
    rendered = lambda messages: render_chat(tokenizer(), messages, add_generation_prompt=True)  # noqa: E731
    for task in TASKS:
        first, second = played[task.task_id]
        failed, reflection, retry = conversations[task.task_id]
        assert rendered(reflection[:1]) == shown(first.role_turns(REFLECTION_ROLE)[0].prompt_ids)
        for trial, conversation in ((first, failed), (second, retry)):
            for i, turn in enumerate(trial.role_turns(ASSISTANT_ROLE)):
                assert rendered(conversation[:3 + 2 * i]) == shown(turn.prompt_ids)
                assert conversation[3 + 2 * i].content == turn.text


def test_the_jsonl_keeps_the_loss_flags(tmp_path):
    path = str(tmp_path / "demos.jsonl")
    warmup.write_demonstrations(path, reflecting()[:3])
    with open(path, encoding="utf-8") as f:
        written = [json.loads(line)["messages"] for line in f]
    assert written == dicts(reflecting()[:3])
    assert [t.get("loss") for t in written[0] if t["role"] == "assistant"] == [False, False, False]
    assert [t.get("loss") for t in written[1]] == [None, None]  # the plan trains (default)
    assert [t.get("loss") for t in written[2] if t["role"] == "assistant"] == [False, None, None]


def test_fraction_zero_is_todays_demonstrations_and_draws_are_seeded():
    assert dicts(demos(0.0)) == dicts(warmup.demonstrations(TASKS, USER, SqlEnvConfig()))
    assert dicts(demos(0.0, recovery=0.5, seed=1)) == dicts(
        warmup.demonstrations(TASKS, USER, SqlEnvConfig(), recovery_fraction=0.5, seed=1))
    half = demos(0.5, seed=1)
    assert dicts(half) == dicts(demos(0.5, seed=1))
    chosen = reflection_demos.reflection_mistakes(TASKS, 0.5, 1, SqlEnvConfig())
    assert 4 <= len(chosen) <= 20 and len(half) == len(TASKS) + 2 * len(chosen)
    assert chosen.keys() != reflection_demos.reflection_mistakes(TASKS, 0.5, 2, SqlEnvConfig()).keys()


def test_the_other_tasks_are_the_plain_or_recovery_demonstrations():
    chosen = reflection_demos.reflection_mistakes(TASKS, 0.5, 3, SqlEnvConfig())
    # The reflection draw is independent of the recovery draw; reflection tasks get no recovery mistake.
    recovering = warmup.recovery_mistakes(TASKS, 0.5, 3, SqlEnvConfig())
    assert set(chosen) & set(recovering) and set(recovering) - set(chosen)
    mixed = split(demos(0.5, recovery=0.5, seed=3), TASKS, chosen)
    others = [t for t in TASKS if t.task_id not in chosen]
    alone = warmup.demonstrations(others, User(others, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS),
                                  SqlEnvConfig(), recovery_fraction=0.5, seed=3)
    # The oracle solves every other task (demonstrations refuses otherwise); recovery mistakes stay as drawn.
    assert dicts([mixed[t.task_id][0] for t in others]) == dicts(alone)
    assert sum(len(c) == 8 for c in alone) == len(set(recovering) - set(chosen))
    for task in TASKS:
        if task.task_id in chosen:
            assert len(mixed[task.task_id][2]) == 6  # the retry is the gold run: no recovery mistake


def test_a_task_whose_failing_trial_is_graded_correct_gets_a_plain_demonstration():
    chosen = reflection_demos.reflection_mistakes(TASKS, 1.0, 0, SqlEnvConfig())
    task = next(t for t in TASKS if not t.is_mutation)
    code = mistakes.rejection(task, chosen[task.task_id].sql).split(":")[0]
    odd = dataclasses.replace(task, label=(code,))  # the error's code happens to be the answer
    tasks = [odd] + [t for t in TASKS if t.task_id != task.task_id][:3]
    conversations = demos(1.0, tasks=tasks)
    assert len(conversations) == 1 + 3 * 3
    assert [m.role for m in conversations[0]] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert conversations[0][5].content == f"Action: Answer\nFinal Answer: [{code!r}]"
    assert MEMORY_HEADER not in conversations[0][2].content


def test_bad_fractions_and_a_missing_tokenizer_are_refused():
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"reflection_fraction must be in \[0, 1\]"):
            demos(fraction)
    with pytest.raises(ValueError, match="reflection demonstrations need the tokenizer"):
        warmup.demonstrations(TASKS[:2], USER, SqlEnvConfig(), reflection_fraction=1.0)
    from cmat_jax.training.config import cmat_config
    config = cmat_config()
    assert config.train.reflection_fraction == 0.0
    config.train.reflection_fraction = -1.0
    with pytest.raises(ValueError, match=r"train\.reflection_fraction must be in \[0, 1\]"):
        parse_run(config)
