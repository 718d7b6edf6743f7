"""The generation benchmark runs end to end (tiny preset, CPU, both implementations)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_generate_runs_on_the_tiny_preset(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, os.path.join(REPO, "bench", "bench_generate.py"), "--preset", "tiny", "--batch", "2",
           "--prompt-len", "8", "--new-tokens", "4", "--dtype", "float32", "--repeats", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("cmat_jax Sampler", "transformers generate", "bandwidth floor", "ratio cmat_jax / transformers"):
        assert row in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    for side in ("cmat_jax", "transformers"):
        assert all(isinstance(result[side][k], float) for k in ("new_tokens_per_s", "step_ms", "prefill_ms"))
    assert result["cmat_jax"]["programs_compiled"] == 2  # one prefill, one decode program
    assert result["cmat_jax"]["copy_bandwidth_gb_s"] > 0
