"""The generation benchmark runs end to end (tiny preset, CPU, both implementations)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from bench.decode_memory import cache_copies
from cmat_jax.models.config import preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.smoke
def test_bench_generate_runs_on_the_tiny_preset(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, os.path.join(REPO, "bench", "bench_generate.py"), "--preset", "tiny", "--batch", "2",
           "--prompt-len", "8", "--new-tokens", "4", "--dtype", "float32", "--repeats", "1", "--memory-report",
           "--json", str(out)]
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
    reports = {r["program"]: r for r in result["cmat_jax"]["memory"]["programs"]}
    assert sorted(reports) == ["decode", "prefill"]
    cfg = preset("tiny")
    for report in reports.values():
        layers, batch, slots, kv_heads, head_dim = report["cache_shape"]  # KVCache's [l, b, s, k, h]
        assert (layers, batch, kv_heads, head_dim) == (cfg.num_layers, 2, cfg.num_kv_heads, cfg.head_dim)
        assert report["cache_gib"] * 2**30 == 2 * layers * batch * kv_heads * slots * head_dim * 4
        assert report["cache_copies"] == []  # the programs write the cache where it lies
    assert reports["decode"]["alias_gib"] >= reports["decode"]["cache_gib"]  # donated: updated in place
    assert proc.stdout.count("whole-cache copies in the optimised HLO: 0") == 2  # the printed report


def test_cache_copies_finds_a_transposed_copy_of_the_whole_array_in_compiled_hlo():
    x = jnp.ones((2, 3, 4, 5, 6), jnp.bfloat16)
    transposed = jax.jit(lambda a: a.transpose(0, 1, 3, 2, 4) * 2).lower(x).compile().as_text()
    found = cache_copies(transposed, list(x.shape), "bf16")
    assert found and all(c["shape"].startswith("bf16[2,3,5,4,6]") for c in found)
    assert cache_copies(transposed, list(x.shape), "f32") == []  # another dtype is not the cache
    assert cache_copies(jax.jit(lambda a: a * 2).lower(x).compile().as_text(), list(x.shape), "bf16") == []
    copied = """ENTRY %main (p: f32[2,3,4,5,6]) -> f32[2,3,4,5,6] {
  %zeros = f32[2,3,4,5,6]{4,3,2,1,0} broadcast(%c), dimensions={}
  ROOT %copy.1 = f32[2,3,4,5,6]{LAYOUT} copy(%zeros)
}"""
    assert cache_copies(copied.replace("LAYOUT", "4,3,2,1,0"), [2, 3, 4, 5, 6], "f32") == []  # a second buffer
    relayout = cache_copies(copied.replace("LAYOUT", "4,2,3,1,0"), [2, 3, 5, 4, 6], "f32")
    assert [(c["computation"], c["name"]) for c in relayout] == [("main", "copy.1")]
    in_place = jax.jit(lambda a: jax.lax.dynamic_update_slice(a, jnp.zeros((2, 3, 4, 1, 6), a.dtype),
                                                              (0, 0, 0, 2, 0)), donate_argnums=0)
    assert cache_copies(in_place.lower(x).compile().as_text(), list(x.shape), "bf16") == []


@pytest.mark.smoke
def test_bench_decode_layers_runs_every_loop(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "bench", "bench_decode_layers.py"), "--preset", "tiny", "--batch", "2",
           "--variants", "scan,static_slices+cublas+no_dot_merger,per_layer_buffers", "--dump-hlo", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for variant in ("scan", "static_slices+cublas+no_dot_merger", "per_layer_buffers"):
        assert result[variant]["step_ms"] > 0
    assert sorted(p.name for p in tmp_path.glob("*.hlo.txt")) == [
        "per_layer_buffers.hlo.txt", "scan.hlo.txt", "static_slices_cublas_no_dot_merger.hlo.txt"]


def test_bench_decode_layers_refuses_an_unknown_variant(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "bench", "bench_decode_layers.py"), "--preset", "tiny",
           "--variants", "scan+turbo"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2 and "scan+turbo" in proc.stderr


def test_trace_summary_counts_busy_time_once_and_groups_numbered_fusions(tmp_path):
    import gzip

    from bench import trace_summary

    meta = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "pid": 1, "tid": 7, "name": "thread_name", "args": {"name": "Stream #7(Compute)"}},
            {"ph": "M", "pid": 1, "tid": 8, "name": "thread_name", "args": {"name": "Stream #8(Compute)"}},
            {"ph": "M", "pid": 1, "tid": 9, "name": "thread_name", "args": {"name": "XLA Ops"}},
            {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}}]
    kernels = [{"ph": "X", "pid": 1, "tid": 7, "ts": 0.0, "dur": 10.0, "name": "fusion_3"},
               {"ph": "X", "pid": 1, "tid": 8, "ts": 5.0, "dur": 10.0, "name": "fusion_17"},  # overlaps the first
               {"ph": "X", "pid": 1, "tid": 7, "ts": 30.0, "dur": 10.0, "name": "gemm"},
               {"ph": "X", "pid": 1, "tid": 9, "ts": 0.0, "dur": 99.0, "name": "derived op line"},
               {"ph": "X", "pid": 2, "tid": 1, "ts": 0.0, "dur": 99.0, "name": "host work"}]
    run_dir = tmp_path / "plugins" / "profile" / "run"
    run_dir.mkdir(parents=True)
    with gzip.open(run_dir / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": meta + kernels}, f)
    trace = trace_summary.load_trace(str(tmp_path))
    assert len(trace_summary.device_kernels(trace)) == 3
    assert trace_summary.busy_time(trace_summary.device_kernels(trace)) == 25.0
    text = trace_summary.summarize(trace, steps=1, top=5)
    assert "span 0.040 ms, kernels busy 0.025 ms (62%), idle 0.015 ms, 3 kernels" in text
    fusion_row = next(line for line in text.splitlines() if line.endswith("  fusion"))
    assert fusion_row.split()[2] == "2.0"  # fusion_3 and fusion_17 in one row
