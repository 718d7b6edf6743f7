"""Test-wide settings: float32 on CPU, exact matmuls, one compilation cache for the session, quiet
deprecation noise from dependencies; the `smoke` marker."""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Many tests build the same tiny programs in separate processes (the xdist workers, the CLI and multi-device
# subprocesses, which inherit the environment): one persistent compilation cache lets each be compiled once.
# The process that loads this file first (pytest itself, before it starts workers) makes the directory.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmat_jax_tests_jit_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the process that made the cache removes it
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config):
    # Tests that run a tool end to end and check only that it finishes and reports positive numbers
    # (timings, rates), never what the numbers are. `pytest -m "not smoke"` leaves them out.
    config.addinivalue_line(
        "markers", "smoke: runs a tool end to end; asserts it completes and reports positive numbers, not their values"
    )
