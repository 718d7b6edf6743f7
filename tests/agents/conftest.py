"""The packaged DBBench dev tasks, for the agent tests."""

import pytest

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, load_tasks


@pytest.fixture(scope="session")
def dev_tasks():
    return load_tasks(DBBENCH_DEV_TASKS)
