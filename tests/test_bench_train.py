"""The LoRA train-step benchmark runs end to end (tiny preset, CPU, our side only: the peer needs CUDA)."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.smoke
def test_bench_train_runs_on_the_tiny_preset(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, os.path.join(REPO, "bench", "bench_train.py"), "--preset", "tiny", "--batch", "2",
           "--seq-len", "32", "--loss-chunk", "16", "--microbatches", "2", "--steps", "2", "--warmup", "1",
           "--no-peer", "--json-out", str(out)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| tiny " in proc.stdout and "cmat_jax tok/s" in proc.stdout, proc.stdout
    ours = json.loads(out.read_text())["results"][0]["ours"]
    assert "error" not in ours, ours
    assert ours["tokens_per_s"] > 0 and ours["compile_s"] > 0 and math.isfinite(ours["loss"])
