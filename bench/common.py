"""Shared pieces of the benchmarks: device ceilings, subprocess runs, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd: list[str], timeout: float = 1800) -> dict:
    """Runs one benchmark side in its own process; returns the JSON object on its last stdout line."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-80:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _timed(fn, *args, repeats: int = 10) -> float:
    out = fn(*args)
    out.block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    out.block_until_ready()
    return (time.perf_counter() - t0) / repeats


def device_ceilings() -> dict:
    """Measured bf16 matmul throughput (8192^3) and device-to-device copy bandwidth, with JAX."""
    import jax
    import jax.numpy as jnp

    on_cpu = jax.default_backend() == "cpu"  # smoke runs: small enough to finish quickly
    n = 1024 if on_cpu else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    matmul_s = _timed(jax.jit(jnp.matmul), a, b)
    x = jnp.ones((2**24 if on_cpu else 2**30,), jnp.float32)  # 4 GiB on an accelerator
    copy_s = _timed(jax.jit(lambda v: v * 1.0), x)  # reads and writes every byte once
    return {"matmul_tflops": 2 * n**3 / matmul_s / 1e12, "copy_gb_s": 2 * x.nbytes / copy_s / 1e9}


def versions() -> dict:
    import flax
    import jax

    return {"jax": jax.__version__, "flax": flax.__version__, "device": str(jax.devices()[0].device_kind)}


def peak_memory_gib() -> float:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**30


def print_table(headers: list[str], rows: list[list], out=sys.stdout) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    text = "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])
    print(text, file=out)
    return text
