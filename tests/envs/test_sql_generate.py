"""The task generator: solvable by the oracle, answers that follow from what an episode shows, deterministic
files, every DBBench type, no DBBench dev table, short tiny prompts, and a cross-check that can fail."""

import ast
import collections
import dataclasses
import os
import re
import subprocess
import sys

import pytest

from cmat_jax.demos.oracle import OracleAgent, answer_reply, operation_reply
from cmat_jax.envs.base import run_episode
from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.env import SqlEnv
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, load_tasks
from cmat_jax.taskgen import generate
from cmat_jax.taskgen.generate import generate_records, generate_tasks, write_tasks
from cmat_jax.taskgen.labels import GeneratorError
from cmat_jax.taskgen.profiles import GENERATED_TYPES, PROFILES
from tests.envs.sql_helpers import REPO_ROOT
from tools import make_sql_tasks

# Ten cycles of each profile's task types: a few hundred tasks, every type several times.
COUNTS = {name: 10 * len(profile.cycle) for name, profile in PROFILES.items()}


@pytest.fixture(scope="module", params=sorted(PROFILES))
def generated(request):
    profile = request.param
    return profile, generate_tasks(COUNTS[profile], seed=11, profile=profile)


def _dev_path():
    for path in (DBBENCH_DEV_TASKS, os.path.join(REPO_ROOT, "..", "shared", "dbbench", "dev.jsonl")):
        if os.path.isfile(path):
            return path
    pytest.fail(f"the DBBench dev tasks are missing: expected {DBBENCH_DEV_TASKS}")


def test_the_oracle_solves_every_task(generated):
    profile, tasks = generated
    env = SqlEnv()
    for query_first in (False, True):
        for task in tasks:
            episode = run_episode(env, OracleAgent(query_first=query_first), task)
            assert episode.final_info["correct"], (task.task_id, task.description, episode.final_info)
            # One operation and one answer (or the answer alone): what the tiny demo model must learn.
            assert len(episode.steps) == (2 if task.is_mutation or query_first else 1)


class CopyingAgent:
    """Runs the gold query and answers with exactly the values the database showed."""

    def begin(self, task):
        self.task, self.sent = task, False

    def act(self, history):
        if not self.sent:
            self.sent = True
            return operation_reply(self.task.gold_query)
        rows = ast.literal_eval(history[-1].content)
        return answer_reply([value for (value,) in rows])


def test_select_answers_follow_from_the_observation(generated):
    _, tasks = generated
    env = SqlEnv()
    for task in tasks:
        if not task.is_mutation:
            episode = run_episode(env, CopyingAgent(), task)
            assert episode.final_info["correct"], (task.task_id, task.gold_query, episode.messages[-2].content)


def test_mutations_are_not_solved_by_doing_nothing(generated):
    _, tasks = generated
    env = SqlEnv()
    mutations = [t for t in tasks if t.is_mutation]
    profile, _ = generated
    assert mutations or not {"INSERT", "UPDATE"} & set(PROFILES[profile].cycle)
    for task in mutations:
        env.reset(task)
        assert not env.step(answer_reply(["done"])).info["correct"], task.task_id
        assert task.answer_md5 != grading.hash_result_text(grading.mysql_table_hash(task.rows))


def test_every_type_in_each_cycle(generated):
    profile, tasks = generated
    cycle = len(PROFILES[profile].cycle)
    for start in range(0, len(tasks), cycle):
        assert {t.task_type for t in tasks[start:start + cycle]} == set(PROFILES[profile].cycle)
    if profile == "lookup":  # the demo's profile: lookups and counts only
        assert set(PROFILES[profile].cycle) == {"other", "counting"}
        return
    assert set(PROFILES[profile].cycle) == set(GENERATED_TYPES)
    counts = collections.Counter(t.task_type for t in tasks)
    select = sum(counts[t] for t in GENERATED_TYPES[:8])
    assert select > counts["INSERT"] + counts["UPDATE"] if profile == "tiny" else select >= len(tasks) // 2


def test_ids_are_unique_and_stable(generated):
    profile, tasks = generated
    assert [t.task_id for t in tasks] == [f"gen-{profile}-11-{i}" for i in range(len(tasks))]


def test_same_seed_same_bytes_and_prefixes(tmp_path):
    for profile in PROFILES:
        a, b, c = (tmp_path / f"{profile}_{x}.jsonl" for x in "abc")
        write_tasks(a, 30, seed=5, profile=profile)
        write_tasks(b, 30, seed=5, profile=profile)
        write_tasks(c, 30, seed=6, profile=profile)
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()
        # Task i depends only on (profile, seed, i): a shorter run is a prefix of a longer one.
        assert generate_records(7, seed=5, profile=profile) == generate_records(30, seed=5, profile=profile)[:7]


def test_the_written_file_reads_back_as_the_same_tasks(tmp_path):
    path = tmp_path / "tasks.jsonl"
    for profile in PROFILES:
        write_tasks(path, 24, seed=2, profile=profile)
        tasks = generate_tasks(24, seed=2, profile=profile)
        loaded = load_tasks(path)
        assert [dataclasses.replace(t, task_id="") for t in loaded] == [
            dataclasses.replace(t, task_id="") for t in tasks]
        assert all(t.gold_query for t in tasks if not t.is_mutation)


def test_no_dbbench_dev_table_question_or_row(generated):
    _, tasks = generated
    dev = load_tasks(_dev_path())
    dev_names = {t.table_name.casefold() for t in dev}
    dev_tables = {frozenset(t.rows) for t in dev}
    dev_rows = {tuple(map(str, row)) for t in dev for row in t.rows}
    dev_descriptions = {t.description.casefold() for t in dev}
    for task in tasks:
        assert task.table_name.casefold() not in dev_names, task.table_name
        assert frozenset(task.rows) not in dev_tables
        assert not dev_rows.intersection(task.rows), task.task_id
        assert task.description.casefold() not in dev_descriptions


def test_dbbench_tables_look_like_wikipedia_tables():
    tasks = generate_tasks(COUNTS["dbbench"], seed=3, profile="dbbench")
    headers = {c for t in tasks for c in t.columns}
    values = [str(v) for t in tasks for row in t.rows for v in row]
    assert any(" " in h for h in headers) and any(re.search(r"[^\w\s]", h) for h in headers)
    patterns = {
        "date": r"(January|February|March|April|May|June|July|August|September|October|November|December) "
                r"\d{1,2}, \d{4}",
        "score": r"\d+–\d+",
        "result": r"[WL] \d+–\d+",
        "thousands": r"\d{1,3}(,\d{3})+",
    }
    for kind, pattern in patterns.items():
        assert any(re.fullmatch(pattern, v) for v in values), kind
    assert min(len(t.rows) for t in tasks) >= 10 and max(len(t.columns) for t in tasks) >= 6
    # Many phrasings: each type opens its descriptions in several different ways.
    openings = collections.defaultdict(set)
    for task in tasks:
        openings[task.task_type].add(" ".join(task.description.lower().split()[:2]))
    for task_type in GENERATED_TYPES:
        assert len(openings[task_type]) >= 4, (task_type, openings[task_type])


def test_tiny_tasks_are_small_and_short():
    from cmat_jax.data import load_tokenizer

    tokenizer = load_tokenizer()
    tasks = generate_tasks(COUNTS["tiny"], seed=4, profile="tiny")
    prompt_tokens = [len(tokenizer(t.prompt)["input_ids"]) for t in tasks]
    sql_tokens = [len(tokenizer(t.gold_sql if t.is_mutation else t.gold_query)["input_ids"]) for t in tasks]
    assert max(prompt_tokens) <= 60, max(prompt_tokens)
    assert max(sql_tokens) <= 32, max(sql_tokens)
    assert all(3 <= len(t.rows) <= 6 and 2 <= len(t.columns) <= 4 for t in tasks)
    assert all(" " not in c for t in tasks for c in t.columns)
    assert all("CAST" not in (t.gold_query or t.gold_sql) for t in tasks if t.task_type != "INSERT")


@pytest.mark.parametrize("task_type", ["counting", "UPDATE"])
def test_a_label_the_environment_contradicts_raises(monkeypatch, task_type):
    drafter = generate._DRAFTERS[task_type]

    def wrong(rng, table, profile):
        draft = drafter(rng, table, profile)
        if draft is None:
            return None
        expected = (str(int(draft.expected[0]) + 1),) if task_type == "counting" else table.rows
        return dataclasses.replace(draft, expected=expected)

    monkeypatch.setitem(generate._DRAFTERS, task_type, wrong)
    index = next(i for i in range(40) if generate.task_type_at(PROFILES["dbbench"], 0, i) == task_type)
    with pytest.raises(GeneratorError, match="expected"):
        generate.generate_record("dbbench", 0, index)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        generate_tasks(0, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        generate_tasks(3, seed=-1)
    with pytest.raises(ValueError, match="profile must be one of dbbench, tiny"):
        generate_tasks(3, seed=0, profile="huge")


def test_a_mixture_interleaves_each_profiles_own_tasks(tmp_path, capsys):
    mixed = generate_tasks(7, seed=3, profile="dbbench+hard")
    dbbench, hard = generate_tasks(4, seed=3, profile="dbbench"), generate_tasks(3, seed=3, profile="hard")
    assert mixed == [dbbench[0], hard[0], dbbench[1], hard[1], dbbench[2], hard[2], dbbench[3]]
    assert generate_records(7, seed=3, profile="tiny+lookup") == generate_records(12, seed=3, profile="tiny+lookup")[:7]
    with pytest.raises(ValueError, match=r"or several joined by '\+' .*found 'dbbench\+huge'"):
        generate_tasks(3, seed=0, profile="dbbench+huge")
    with pytest.raises(ValueError, match="names a profile twice"):
        generate_tasks(3, seed=0, profile="hard+hard")
    out = tmp_path / "mix.jsonl"
    assert make_sql_tasks.main(["--n", "5", "--seed", "3", "--profile", "dbbench+hard", "--out", str(out)]) == 0
    assert [t.description for t in load_tasks(out)] == [t.description for t in mixed[:5]]
    with pytest.raises(SystemExit) as exit_info:
        make_sql_tasks.main(["--n", "5", "--seed", "3", "--profile", "dbbench+", "--out", str(out)])
    assert exit_info.value.code == 2 and "--profile: profile must be one of" in capsys.readouterr().err


def test_cli_writes_what_write_tasks_writes(tmp_path, capsys):
    out, reference = tmp_path / "cli.jsonl", tmp_path / "api.jsonl"
    assert make_sql_tasks.main(["--n", "20", "--seed", "9", "--profile", "tiny", "--out", str(out)]) == 0
    write_tasks(reference, 20, seed=9, profile="tiny")
    assert out.read_bytes() == reference.read_bytes()
    assert "wrote 20 tiny tasks" in capsys.readouterr().out
    # Another process with another string-hash seed writes the same bytes.
    other = tmp_path / "other.jsonl"
    script = os.path.join(REPO_ROOT, "tools", "make_sql_tasks.py")
    subprocess.run([sys.executable, script, "--n", "20", "--seed", "9", "--profile", "tiny", "--out", str(other)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.read_bytes() == reference.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        make_sql_tasks.main(["--n", "2", "--seed", "0", "--out", str(tmp_path / "missing" / "x.jsonl")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_hard_profile_needs_backquotes_and_more_conditions():
    tasks = generate_tasks(COUNTS["hard"], seed=11, profile="hard")
    assert not [t.table_name for t in tasks if re.fullmatch(r"\w+", t.table_name)]  # none runs unquoted
    conditions = [t.gold_query.count(" AND ") + 1 for t in tasks if t.gold_query and " WHERE " in t.gold_query]
    assert max(conditions) == 3 > PROFILES["dbbench"].max_conditions
    updates = collections.Counter(t.task_type for t in tasks)["UPDATE"]
    assert updates == len(tasks) * 6 // len(PROFILES["hard"].cycle)
