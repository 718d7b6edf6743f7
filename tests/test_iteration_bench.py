"""The whole-iteration benchmark runs end to end (the tiny shape, CPU, cmat_jax and transformers + PEFT): a smoke
test of the script. It asserts the table and positive, finite numbers, never what they are."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench", "bench_iteration.py")


def run(tmp_path, *flags):
    return subprocess.run([sys.executable, BENCH, "--shape", "tiny", *flags], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.smoke
def test_bench_iteration_runs_the_tiny_shape_against_the_peer(tmp_path):
    out = tmp_path / "result.json"
    # No warm start and no warm-up iteration: the measured iteration compiles, which is fine for a smoke test.
    proc = run(tmp_path, "--warm-steps", "0", "--warmup-iterations", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("| cmat_jax ", "| transformers + PEFT ", "| ratio (peer / cmat_jax) ", "rollout tok/s", "update tok/s"):
        assert row in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    ours, peer = result["cmat_jax"], result["transformers"]
    (iteration,) = ours["iterations"]
    assert iteration["episodes"] == 2 * 2 * 2  # 2 tasks x 2 samples, every episode fails and is tried again
    assert iteration["update_batches"] >= 1  # the forced headers give every group two rewards: it trains
    for side in (ours["mean"], peer):
        for key in ("assistant_s", "reflection_s", "update_s", "rollout_tokens", "update_tokens"):
            assert math.isfinite(side[key]) and side[key] > 0, (key, side)
    assert peer["update_tokens"] == ours["mean"]["update_tokens"]  # the same rows
    assert result["command"].startswith("python bench/bench_iteration.py --shape tiny")


def test_bench_iteration_refuses_bad_input_in_one_line(tmp_path):
    proc = run(tmp_path, "--iterations", "0")
    assert proc.returncode == 2 and "--iterations must be >= 1, got 0" in proc.stderr
    proc = run(tmp_path, "--set", "rollout.max_rounds")
    assert proc.returncode == 2 and "--set takes KEY=VALUE" in proc.stderr
