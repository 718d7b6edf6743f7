"""Run as `python -m tests.distributed.multiprocess_check PHASE TMP` by test_multiprocess.py: one process of 8
CPU devices (phases 'reference' and 'resume'), or each of 2 processes x 4 devices started by
`tools/tpu_vm.py local` (phase 'two'). Each process writes what it measured to TMP/PHASE.<process>.json.

reference: SFT steps 1..6 (checkpoints every 2 steps); a run killed after its checkpoint 2 (workdir
           'k1'); a CMAT run (warm start, one iteration), copied to 'cmat_two' as it was after the warm start.
two:       the same SFT steps; 'k1' (written by 1 process) resumed; a run killed after checkpoint 2
           ('k2', written by 2 processes to its own checkpoint.directory); 'cmat_two' resumed: the same
           CMAT iteration; which files each process wrote.
resume:    'k2' resumed by 1 process; its model loaded as export loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from cmat_jax import distributed
from cmat_jax.settings.run import parse_run
from cmat_jax.training.config import default_config

SFT_STEPS = 6
KILLED_AT = 3  # the batch that never comes: checkpoint 2 is the last one


def sft_config(tmp: str, name: str, **overrides):
    from tests.training.common import tiny_config

    settings = {"data.batch_size": 16, "train.microbatches": 2, "train.loss_chunk_size": 24,
                "train.steps": SFT_STEPS, "checkpoint.every": 2, "checkpoint.keep": 10}
    if name == "k2":  # checkpoints on "shared storage" outside the workdir
        settings["checkpoint.directory"] = os.path.join(tmp, "shared", "k2_checkpoints")
    settings.update(overrides)
    return tiny_config(os.path.join(tmp, name), os.path.join(tmp, "data"), **settings)


def cmat_config(tmp: str, name: str):
    """configs/cmat_tiny.py with a short warm start, one iteration, few tasks."""
    from tests.repo_configs import config_module

    c = config_module("cmat_tiny").get_config()
    c.workdir = os.path.join(tmp, name)
    c.train.steps = 20  # enough for some replies DBBench can read, so the update has groups with signal
    c.train.learning_rate = 2e-2
    c.data.batch_size = 8  # half the config's 16 demonstrations per step: a short warm start
    c.tasks.train_count = 16
    c.tasks.demo_count = None  # every task demonstrated, and both advantage signs trained: every process
    c.rl.positive_only = c.rl.reinforced_only = False  # has update rows in its one iteration
    c.tasks.eval_count = 2
    c.rollout.tasks_per_iteration = 2
    c.rollout.group_size = 4
    c.rollout.max_new_tokens = 48
    c.rollout.max_rounds = 3
    c.rl.iterations = 1
    c.rl.eval_every = 100
    c.rl.measure_kl = False
    c.reflection.trials = 2  # failed episodes write reflections (joined reply calls) and retry
    c.checkpoint.async_save = False
    return c


def train(config, kill_at=None) -> list[float]:
    from cmat_jax.training.trainer import Trainer
    from tests.training.common import KilledAt

    trainer = Trainer(parse_run(config))
    if kill_at is not None:
        trainer.batches = KilledAt(trainer.batches, kill_at)
    try:
        return [h["loss"] for h in trainer.train()]
    except KeyboardInterrupt:
        return []
    finally:
        trainer.close()


def resume(tmp: str, name: str) -> dict:
    from cmat_jax.training.trainer import Trainer

    trainer = Trainer(parse_run(sft_config(tmp, name, resume=True)))
    try:
        return {"restored_at": trainer.step, "losses": [h["loss"] for h in trainer.train()]}
    finally:
        trainer.close()


def cmat(tmp: str, name: str, resume: bool = False) -> dict:
    """The run's records (without wall-clock times), its long-term memory, and the episodes this process
    played in the iteration's rollout and in the evaluation."""
    from cmat_jax.rl.loop import CmatRun, without_timings

    config = cmat_config(tmp, name)
    config.resume = resume
    run = CmatRun(parse_run(config))
    try:
        records = without_timings(run.run())
    finally:
        run.close()
    return {"records": records, "memory": run.memory.state(),
            "played": {"rl": run.train_engine.last_stats.episodes, "eval": run.eval_engine.last_stats.episodes}}


def copy_after_warm_start(tmp: str, source: str, target: str) -> None:
    """`target`: the run `source` as it was when its warm start's checkpoint was written."""
    shutil.copytree(os.path.join(tmp, source), os.path.join(tmp, target))
    warm_start = cmat_config(tmp, source).train.steps
    checkpoints = os.path.join(tmp, target, "checkpoints")
    for name in os.listdir(checkpoints):
        if name.isdigit() and int(name) > warm_start:
            shutil.rmtree(os.path.join(checkpoints, name))


def files(tmp: str, name: str) -> dict:
    workdir = os.path.join(tmp, name)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        steps = [json.loads(line)["step"] for line in f]
    return {"metric_steps": steps, "event_files": len(os.listdir(os.path.join(workdir, "tensorboard"))),
            "checkpoints": sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())}


def interleaved_rows() -> bool:
    """On a mesh whose device order alternates between the processes, each process's rows (not one block)
    still build the global batch."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from cmat_jax import sharding as sharding_lib

    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(jax.process_count())]
    devices = [d for group in zip(*by_process) for d in group]
    mesh = sharding_lib.make_mesh(1, 8, 1, devices=devices)  # the rows of consecutive devices alternate
    batch_sharding = sharding_lib.batch_sharding(mesh, 2)
    full = np.arange(16 * 3, dtype=np.int32).reshape(16, 3)
    rows = distributed.process_rows(batch_sharding, 16)
    placed = jax.make_array_from_process_local_data(batch_sharding, full[list(rows)], full.shape)
    blocks = len([r for i, r in enumerate(rows) if i == 0 or rows[i - 1] != r - 1])
    return blocks > 1 and bool(np.array_equal(multihost_utils.process_allgather(placed, tiled=True), full))


def main(phase: str, tmp: str) -> None:
    distributed.initialize(default_config().distributed)  # tools/tpu_vm.py local's settings, if any
    import jax

    assert jax.device_count() == 8, f"expected 8 devices in all, found {jax.device_count()}"
    out = {"processes": jax.process_count()}
    if phase == "reference":
        out["sft"] = train(sft_config(tmp, "ref"))
        train(sft_config(tmp, "k1"), kill_at=KILLED_AT)
        out["cmat"] = cmat(tmp, "cmat_one")
        copy_after_warm_start(tmp, "cmat_one", "cmat_two")
    elif phase == "two":
        out["interleaved_rows"] = interleaved_rows()
        out["sft"] = train(sft_config(tmp, "two"))
        out["files"] = files(tmp, "two")
        out["resumed_k1"] = resume(tmp, "k1")
        train(sft_config(tmp, "k2"), kill_at=KILLED_AT)
        out["cmat"] = cmat(tmp, "cmat_two", resume=True)
        out["cmat_files"] = files(tmp, "cmat_two")
    elif phase == "resume":
        from cmat_jax.training.workdir import load_trained_model, saved_roles

        out["resumed_k2"] = resume(tmp, "k2")
        workdir = os.path.join(tmp, "k2")
        out["k2_export"] = {"roles": saved_roles(workdir), "step": load_trained_model(workdir)[2],
                            "checkpoints": sorted(os.listdir(os.path.join(tmp, "shared", "k2_checkpoints"))),
                            "workdir": sorted(os.listdir(workdir))}
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    with open(os.path.join(tmp, f"{phase}.{jax.process_index()}.json"), "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
