"""The packaged DBBench dev tasks and the bundled tokenizer, for the agent tests."""

import pytest

from cmat_jax.data.tokenizer import load_tokenizer
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, load_tasks


@pytest.fixture(scope="session")
def dev_tasks():
    return load_tasks(DBBENCH_DEV_TASKS)


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()
