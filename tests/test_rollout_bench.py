"""The rollout benchmark runs end to end (tiny preset, CPU, both implementations): a smoke test of the script."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench", "bench_rollout.py")


def run(tmp_path, *flags):
    return subprocess.run([sys.executable, BENCH, "--preset", "tiny", "--dtype", "float32", *flags],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_bench_rollout_runs_on_the_tiny_preset(tmp_path):
    out = tmp_path / "result.json"
    proc = run(tmp_path, "--tasks", "2", "--group-size", "2", "--peer-episodes", "2", "--max-new-tokens", "4",
               "--max-rounds", "1", "--checker", "static+learned", "--checker-max-new-tokens", "3", "--trials", "2",
               "--reflection-max-new-tokens", "3", "--short-instructions", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("cmat_jax engine", "transformers loop", "ratio", "where the time went"):
        assert row in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    ours, peer = result["cmat_jax"], result["transformers"]
    # Forced operations: every trial runs max_rounds statements and one more reply, then hits the round limit,
    # so every episode fails and is tried twice.
    assert ours["episodes"] == 2 * 2 * 2 and peer["episodes"] == 2 * 2
    for side in (ours, peer):
        assert side["statuses"] == {"round_limit": side["episodes"]}
        assert side["assistant_turns_per_episode"] == 2.0
        roles = side["new_tokens_by_role"]
        turns = side["episodes"] * 2
        assert 0 < roles["assistant"] <= 4 * turns  # sampled ids only, at most max_new_tokens per turn
        assert 0 < roles["checker"] <= 3 * turns and 0 < roles["reflection"] <= 3 * side["episodes"] // 2
        assert side["new_tokens"] == sum(roles.values())
        parts = [side[k] for k in ("assistant_s", "static_checker_s", "learned_checker_s", "env_s", "reflection_s")]
        assert all(p > 0 for p in parts) and sum(parts) <= side["total_s"]
        assert abs(side["episodes_per_s"] * side["total_s"] - side["episodes"]) < 1e-6
    assert ours["programs_compiled"] > 0 and ours["sampler_calls"] > 0
    assert result["ratio"]["episodes_per_s"] == ours["episodes_per_s"] / peer["episodes_per_s"]
    assert result["command"].startswith("python bench/bench_rollout.py --preset tiny")
    assert {"jax", "flax", "sqlglot"} <= set(result["machine"]["versions"]) and "torch" in peer["versions"]


def test_bench_rollout_refuses_bad_input_in_one_line(tmp_path):
    proc = run(tmp_path, "--tasks", "0", "--no-peer")
    assert proc.returncode == 2 and "--tasks must be >= 1, got 0" in proc.stderr
    proc = run(tmp_path, "--preset", "smollm3", "--no-peer")
    assert proc.returncode == 2 and "smollm2_135m" in proc.stderr


def test_bench_rollout_synthetic_workload_runs_on_the_tiny_preset(tmp_path):
    out = tmp_path / "synthetic.json"
    proc = run(tmp_path, "--workload", "synthetic", "--batch", "4", "--group-size", "2", "--opening", "16", "--turns",
               "2", "--max-new-tokens", "3", "--observation", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("persistent", "reprefill", "transformers", "persistent slots over reprefill", "prefill ms (ids)"):
        assert row in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    ours, peer = result["cmat_jax"]["4"], result["transformers"]["4"]
    persistent, reprefill = ours["persistent"], ours["reprefill"]
    assert persistent["checksum"] == reprefill["checksum"]  # float32: the two cache modes sample the same ids
    # Turn 1: one opening per task group (2 x 16 ids) against every episode's; turn 2: the last reply id and the
    # observation (4 x 5) against whole conversations (4 x 23).
    assert [t["prefill_tokens"] for t in persistent["per_turn"]] == [32, 20]
    assert [t["prefill_tokens"] for t in reprefill["per_turn"]] == [64, 92]
    assert persistent["slot_stats"]["shared_tokens"] == 32 and persistent["bytes_per_slot_row"] > 0
    for side in (persistent, reprefill, peer):
        assert side["episodes"] == 4 and abs(side["new_tokens_per_s"] * side["total_s"] - 4 * 2 * 3) < 1e-6
    assert persistent["programs_compiled"] > 0 and persistent["programs_compiled_while_measured"] == 0


def test_largest_batch_doubles_then_bisects(monkeypatch):
    import dataclasses

    from bench import rollout_synthetic

    tried = []

    def fits(model, workload, seed, unroll=False, min_cache_slots=256):
        tried.append(workload.batch)
        return (True, "") if workload.batch <= 100 else (False, "RESOURCE_EXHAUSTED: Out of memory")

    monkeypatch.setattr(rollout_synthetic, "fits", fits)
    template = rollout_synthetic.Workload(8, 4, 16, 2, 3, 4, 1024, 0)
    found = rollout_synthetic.largest_batch(None, lambda b: dataclasses.replace(template, batch=b), 8, seed=0)
    # Doubling to the first failure (128), then halving the gap (in multiples of the group) until it is at most
    # an eighth of the last fit (104 - 96 <= 96 / 8).
    assert tried == [16, 32, 64, 128, 96, 112, 104]
    assert found["largest"] == 96 and found["first_failure"] == 104
    assert found["tried"][128].startswith("RESOURCE_EXHAUSTED") and found["tried"][96] == "fits"


def test_the_largest_batch_search_is_refused_on_cpu(tmp_path):
    proc = run(tmp_path, "--workload", "synthetic", "--batch", "4", "--group-size", "2", "--opening", "16",
               "--turns", "2", "--max-new-tokens", "3", "--observation", "4", "--no-peer", "--max-batch")
    assert proc.returncode != 0 and "--max-batch searches an accelerator's memory" in proc.stderr
