"""Two processes x 4 CPU devices (tools/tpu_vm.py local, gloo collectives) equal one process of 8 devices:
SFT losses, one CMAT iteration's metrics and long-term memory (resumed by 2 processes from the 1-process
run's warm-start checkpoint; each process plays its share of the episodes), and checkpoints written by 2 processes resumed by 1 and the reverse.

Each phase runs in subprocesses (jax reads its device and process settings once, at start-up), under a
timeout: a process that fails stops the others (the launcher), and a hang fails the test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-5  # relative, float32: the mesh tests' (tests/training/test_multidevice.py)
PHASE_TIMEOUT_S = 600
CHECK = [sys.executable, "-m", "tests.distributed.multiprocess_check"]


def _env(tmp: str) -> dict:
    # One compilation cache for every phase: a program compiled once (per process layout) is read back by
    # the later Trainers of a phase and by the 'resume' phase.
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    for name in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "CMAT_NUM_PROCESSES", "CMAT_PROCESS_ID"):
        env.pop(name, None)
    return env


def _tail(output: str) -> str:
    """The end of a failed phase's output without gloo's connection lines and progress bars."""
    lines = [line for line in output.splitlines() if "[Gloo]" not in line and "\r" not in line]
    return "\n".join(lines)[-6000:]


def _one_process(phase: str, tmp: str) -> dict:
    result = subprocess.run(CHECK + [phase, tmp], cwd=REPO, env=dict(_env(tmp), JAX_NUM_CPU_DEVICES="8"),
                            capture_output=True, text=True, timeout=PHASE_TIMEOUT_S)
    assert result.returncode == 0, _tail(result.stderr)
    with open(os.path.join(tmp, f"{phase}.0.json"), encoding="utf-8") as f:
        return json.load(f)


def _two_processes(phase: str, tmp: str) -> list[dict]:
    launcher = [sys.executable, os.path.join(REPO, "tools", "tpu_vm.py"), "local", "--num-processes", "2",
                "--cpu-devices", "4", "--timeout", str(PHASE_TIMEOUT_S - 30), "--"]
    result = subprocess.run(launcher + CHECK + [phase, tmp], cwd=REPO, env=_env(tmp), capture_output=True, text=True,
                            timeout=PHASE_TIMEOUT_S)
    assert result.returncode == 0, _tail(result.stdout + result.stderr)
    outs = []
    for index in range(2):
        with open(os.path.join(tmp, f"{phase}.{index}.json"), encoding="utf-8") as f:
            outs.append(json.load(f))
    return outs


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=1e-7)
    return a == b


def test_two_processes_equal_one_and_checkpoints_move_between_process_counts(tmp_path):
    tmp = str(tmp_path)
    reference = _one_process("reference", tmp)
    two = _two_processes("two", tmp)
    resumed = _one_process("resume", tmp)
    assert reference["processes"] == resumed["processes"] == 1 and [o["processes"] for o in two] == [2, 2]
    ref_losses = reference["sft"]
    assert len(ref_losses) == 6 and ref_losses[-1] < ref_losses[0]

    for out in two:
        assert out["interleaved_rows"]  # rows of a process that are not one block still make the global batch
        # (a) SFT: every process reads the same global losses, equal to one process's.
        assert _close(out["sft"], ref_losses), (out["sft"], ref_losses)
        # (c) 1 -> 2: a checkpoint written by one process, resumed by two, continues to the same losses.
        assert out["resumed_k1"]["restored_at"] == 2 and _close(out["resumed_k1"]["losses"], ref_losses[2:])
        # (b) one CMAT iteration after the same warm start: the same records (every metric but wall-clock times)
        # and the same long-term memory (each process wrote its own episodes' reflections).
        assert [r["phase"] for r in out["cmat"]["records"]] == ["rl", "eval"]
        assert _close(out["cmat"]["records"], reference["cmat"]["records"][-2:]), (out["cmat"], reference["cmat"])
        assert out["cmat"]["memory"] == reference["cmat"]["memory"]
    # Each process played its share of the episodes (one task of two), and the shares make the whole.
    played = [out["cmat"]["played"] for out in two]
    for phase in ("rl", "eval"):
        assert all(0 < p[phase] < reference["cmat"]["played"][phase] for p in played), (played, reference["cmat"])
        assert sum(p[phase] for p in played) == reference["cmat"]["played"][phase]
    assert reference["cmat"]["memory"]["entries"]  # failed episodes reflected: the retries were played too
    # (c) 2 -> 1, from checkpoint.directory (storage outside the workdir); export finds the checkpoints there.
    assert resumed["resumed_k2"]["restored_at"] == 2 and _close(resumed["resumed_k2"]["losses"], ref_losses[2:])
    export = resumed["k2_export"]
    assert export["roles"] == ["assistant"] and export["step"] == 6 and export["checkpoints"] == ["2", "4", "6"]
    assert "checkpoints" not in export["workdir"]

    # Process 0 alone writes metrics and TensorBoard events; every process took part in the checkpoints.
    files = two[0]["files"]
    assert files["metric_steps"] == [1, 2, 3, 4, 5, 6] and files["event_files"] == 1
    assert files["checkpoints"] == [2, 4, 6]
    assert two[0]["cmat_files"]["event_files"] == 2  # the 1-process run's, and process 0's after the resume

    # The comparison means something: the CMAT iteration trained on some tokens.
    rl = [r for r in reference["cmat"]["records"] if r["phase"] == "rl"]
    assert len(rl) == 1 and rl[0]["zero_adv_frac"] < 1.0 and rl[0]["loss"] != 0.0, rl
