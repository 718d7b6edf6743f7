"""The real DBBench dev tasks (shipped with the package), for the tests that need them."""

import pytest

from cmat_jax.envs.sql.tasks import load_tasks
from tests.envs.sql_helpers import DEV_TASKS


@pytest.fixture(scope="session")
def dev_tasks():
    return load_tasks(DEV_TASKS)
