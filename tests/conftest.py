"""Test-wide settings: float32 on CPU, exact matmuls, quiet deprecation noise from dependencies; the
`smoke` marker; the slowest test files first."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    # Tests that run a tool end to end and check only that it finishes and reports positive numbers
    # (timings, rates), never what the numbers are. `pytest -m "not smoke"` leaves them out.
    config.addinivalue_line(
        "markers", "smoke: runs a tool end to end; asserts it completes and reports positive numbers, not their values"
    )


# The slowest files, slowest first (wall seconds on the 2-core CI machine): with `-n 2 --dist loadfile
# --no-loadscope-reorder` the two workers take files in collection order, so starting with these keeps one
# long file from running alone at the end.
SLOWEST_FIRST = (
    "tests/distributed/test_multiprocess.py",  # ~250 s: 2 processes x 4 devices against 1 x 8
    "tests/training/test_multidevice.py",  # ~95 s
    "tests/rl/test_multidevice.py",  # ~80 s
    "tests/rl/test_cmat_loop.py",
    "tests/agents/test_processes.py",
    "tests/rl/test_smollm2_recipe.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    # A stable sort: each file's tests keep their order and stay together.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOWEST_FIRST)))
