"""The real DBBench dev tasks, for the tests that need them."""

import os

import pytest

from cmat_jax.envs.sql.tasks import load_tasks
from tests.envs.sql_helpers import DEV_TASKS


@pytest.fixture(scope="session")
def dev_tasks():
    if not os.path.isfile(DEV_TASKS):
        pytest.skip(f"the DBBench dev tasks are not at {DEV_TASKS} (expected beside the checkout, in ../shared)")
    return load_tasks(DEV_TASKS)
