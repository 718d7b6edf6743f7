"""A CI-sized sample of the adversarial corpus (the full corpus: python tools/fuzz_sql.py, docs/sql_env.md).

Step times and peak memory are what the full run reports; tests never assert on wall time.
"""

import collections

import pytest

from cmat_jax.envs.sql import allowlist
from cmat_jax.envs.sql.database import Limits
from cmat_jax.sqlfuzz import fuzz

FAMILIES = {"issue", "escape", "function", "time", "memory", "answer", "grammar", "soup", "mutation"}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    return workdir, fuzz.corpus(seed=0, tmp=str(workdir))


def test_the_corpus_is_seeded_large_and_covers_every_family(cases, tmp_path):
    workdir, corpus = cases
    assert sum(len(c.statements) for c in corpus) >= 10_000
    assert {c.family for c in corpus} == FAMILIES
    assert fuzz.corpus(seed=0, tmp=str(workdir)) == corpus
    assert fuzz.corpus(seed=1, tmp=str(workdir)) != corpus
    statements = {s for c in corpus for s in c.statements}
    for vector in ("SELECT fts3_tokenizer('simple', x'4141414141414141')", "SELECT * FROM pragma_table_info('x')",
                   "SELECT INSTR(REPEAT('a', 999000), CONCAT(REPEAT('a', 499000), 'b'))",
                   "INSERT INTO T (c) SELECT NULL FROM T a, T b, T c, T d LIMIT 5000000",
                   "SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, b.c) = REPEAT('ﷺ', 30000)",
                   "SELECT LENGTH(x) FROM (SELECT CONCAT(REPEAT('ﷺ', 15000), c) AS x FROM T) s ORDER BY x"):
        assert vector in statements, vector
    # Every function of this SQLite build outside the allow-list is called, and flagged as such.
    flagged = {s for c in corpus if c.calls_denied_function for s in c.statements}
    for name, _ in fuzz._build_functions():  # noqa: SLF001
        if name.lower() not in allowlist.ALLOWED_FUNCTIONS and name not in ("->", "->>"):
            assert any(f"`{name}`(" in s for s in flagged), name


def test_a_sample_of_the_corpus_breaks_no_promise(cases, monkeypatch):
    workdir, corpus = cases
    sample = fuzz.sample(corpus, 300)
    assert collections.Counter(c.family for c in sample).keys() == FAMILIES
    monkeypatch.chdir(workdir)  # relative paths in the attacks land in the watched directory
    report = fuzz.run(sample, Limits(timeout_s=0.25), workdir=str(workdir))
    assert report.statements + report.answer_steps > 300
    assert report.escaped == []
    assert report.oversized == []
    assert report.denied_functions_ran == []
    assert report.changed_tables == []
    assert report.created_files == []
    assert report.corrupted == []
    assert report.errors["denied"] > 0 and report.errors["timeout"] > 0 and report.errors[None] > 0
