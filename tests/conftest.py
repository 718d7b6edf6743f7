"""Test-wide settings: float32 on CPU, exact matmuls, quiet deprecation noise from dependencies; the
`smoke` marker."""

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
