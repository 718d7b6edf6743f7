"""A run's workdir is never lost in silence: the lock, refused starts and resumes, the fallback to the last
intact checkpoint, signals, disk errors, and the one-line reports of tools and task files
(docs/training.md, "When a run stops" and "What protects a workdir")."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import orbax.checkpoint as ocp
import pytest

from cmat_jax.fileio import disk_error
from cmat_jax.settings.run import parse_run
from cmat_jax.training import lock as lock_lib
from cmat_jax.training import run_state
from cmat_jax.training.checkpoint import CheckpointUnreadable
from cmat_jax.training.lock import WorkdirInUse, lock_workdir
from cmat_jax.training.trainer import Trainer
from tests.training.common import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The CLI runs: sft_tiny.py cut to a few short steps.
CLI_FLAGS = ["--config.data.batch_size=2", "--config.data.seq_len=128", "--config.checkpoint.every=2",
             "--config.checkpoint.keep=10"]


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    return env


def _train_cli(workdir, *flags, steps=6) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cmat_jax.train", "--config", os.path.join(REPO, "configs", "sft_tiny.py"),
           f"--config.train.steps={steps}", f"--config.workdir={workdir}", *CLI_FLAGS, *flags]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_line(stderr: str) -> str:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()][-1]


def _train(config) -> list[float]:
    trainer = Trainer(parse_run(config))
    try:
        return [h["loss"] for h in trainer.train()]
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted 6-step SFT run with checkpoints 2, 4 and 6 (copied by the tests that damage it)."""
    root = tmp_path_factory.mktemp("finished")
    workdir, data = str(root / "run"), str(root / "data")
    _train(tiny_config(workdir, data))
    return workdir, data


def _copy(finished_run, tmp_path) -> str:
    workdir = str(tmp_path / "copy")
    shutil.copytree(finished_run[0], workdir)
    return workdir


# -- the lock --------------------------------------------------------------


def test_two_runs_racing_on_one_workdir_one_is_refused_and_the_other_keeps_its_records(tmp_path):
    workdir = tmp_path / "race"
    first = _train_cli(workdir)
    deadline = time.monotonic() + 300
    while not (workdir / "run.lock").exists():  # the second starts while the first holds the workdir
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.2)
    second = _train_cli(workdir)
    results = [(p, *p.communicate(timeout=600)) for p in (first, second)]
    statuses = sorted(p.returncode for p, _, _ in results)
    assert statuses == [0, 1], [err[-2000:] for _, _, err in results]
    (winner, _, _), (loser, _, loser_err) = sorted(results, key=lambda r: r[0].returncode)
    line = _last_line(loser_err)
    assert line.startswith(f"error: {workdir} is in use by another run (pid {winner.pid} on host "), line
    assert "Traceback" not in loser_err
    assert [m["step"] for m in _metrics(workdir)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 6
    assert not (workdir / "run.lock").exists()  # released on exit


def test_a_stale_lock_is_taken_over_and_a_live_or_foreign_one_refused(tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    path = os.path.join(workdir, "run.lock")
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "started": "2025-01-01T00:00:00+00:00"}
    with open(path, "w") as f:
        json.dump(record, f)
    warnings = []
    monkeypatch.setattr(lock_lib, "logging", types.SimpleNamespace(warning=lambda msg, *a: warnings.append(msg % a)))
    held = lock_workdir(workdir)
    assert len(warnings) == 1 and f"pid {dead.pid}" in warnings[0] and "no longer running" in warnings[0]
    assert json.load(open(path))["pid"] == os.getpid()
    again = lock_workdir(workdir)  # the same process holds it once more: shared, released by the last holder
    again.release()
    assert os.path.exists(path)
    held.release()
    assert not os.path.exists(path)

    with open(path, "w") as f:  # a pid that runs (ours is not checked: use the parent's)
        json.dump(dict(record, pid=os.getppid()), f)
    with pytest.raises(WorkdirInUse, match=rf"in use by another run \(pid {os.getppid()} on host "):
        lock_workdir(workdir)
    with open(path, "w") as f:
        json.dump(dict(record, host="another-host"), f)
    with pytest.raises(WorkdirInUse, match=r"locked by a run on another host .* delete .*run\.lock"):
        lock_workdir(workdir)
    assert json.load(open(path))["host"] == "another-host"  # a refused run leaves the holder's record


def test_a_lock_held_by_another_process_is_refused_at_once(tmp_path):
    workdir = str(tmp_path / "w")
    code = ("import sys, time; from cmat_jax.training.lock import lock_workdir; lock_workdir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, workdir], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(WorkdirInUse, match=rf"pid {holder.pid} on host {socket.gethostname()}, started "):
            lock_workdir(workdir)
        assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    lock_workdir(workdir).release()  # the kernel dropped the dead holder's flock: taken over


# -- starting and resuming ----------------------------------------------------


def test_a_fresh_run_on_a_workdir_with_records_is_refused_unless_overwrite(finished_run, tmp_path):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    with pytest.raises(FileExistsError, match=r"already holds a run \(checkpoints up to step 6 .*6 lines of "
                                              r"metrics\.jsonl\); pass --config\.resume=true .*--config\.overwrite"):
        Trainer(parse_run(tiny_config(workdir, data, **{"train.learning_rate": 5e-3})))
    with pytest.raises(ValueError, match="resume and overwrite are both true"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True, overwrite=True)))
    assert len(_metrics(workdir)) == 6
    losses = _train(tiny_config(workdir, data, overwrite=True, **{"train.steps": 2}))
    assert [m["step"] for m in _metrics(workdir)] == [1, 2] and len(losses) == 2
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    assert json.loads(open(os.path.join(workdir, "config.json")).read())["train"]["steps"] == 2


def test_a_resume_on_an_empty_workdir_starts_at_step_0_with_a_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(run_state, "logging", types.SimpleNamespace(warning=lambda msg, *a: warnings.append(msg % a)))
    trainer = Trainer(parse_run(tiny_config(str(tmp_path / "new"), str(tmp_path / "data"), resume=True)))
    trainer.close()
    assert trainer.step == 0
    assert len(warnings) == 1 and "holds no checkpoint" in warnings[0] and "starting the run at step 0" in warnings[0]


def test_a_resume_that_finds_no_checkpoint_says_where_it_looked(finished_run, tmp_path):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    before = open(os.path.join(workdir, "config.json")).read()
    elsewhere = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint was found in {elsewhere} .*pass "
                                                rf"--config\.checkpoint\.directory={workdir}/checkpoints"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True, **{"checkpoint.directory": elsewhere})))
    # A run that stopped before its first checkpoint: records, but nothing to resume from.
    shutil.rmtree(os.path.join(workdir, "checkpoints"))
    with pytest.raises(FileNotFoundError, match=r"holds 6 lines of metrics\.jsonl, but no checkpoint was found .*"
                                                r"start over with --config\.resume=false --config\.overwrite=true"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True)))
    assert open(os.path.join(workdir, "config.json")).read() == before
    assert len(_metrics(workdir)) == 6
    # A checkpoint path that is a file fails at once (orbax would retry it for minutes).
    afile = tmp_path / "afile"
    afile.write_text("")
    start = time.monotonic()
    with pytest.raises(NotADirectoryError, match=f"checkpoint directory {afile} is a file"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True, **{"checkpoint.directory": str(afile)})))
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("damage, error, message", [
    ("delete", FileNotFoundError, r"config\.json, the record of the run's settings, is missing"),
    ("garble", ValueError, r"config\.json is not valid JSON \(Expecting value: line 1 column 1 \(char 0\)\)"),
])
def test_a_resume_without_a_readable_config_json_is_refused(finished_run, tmp_path, damage, error, message):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    path = os.path.join(workdir, "config.json")
    if damage == "delete":
        os.remove(path)
    else:
        open(path, "w").write("")
    with pytest.raises(error, match=message + r".*start over with --config\.resume=false --config\.overwrite=true"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True, **{"train.learning_rate": 5e-3})))
    assert os.path.exists(path) == (damage == "garble")  # not rewritten with this run's settings


def test_a_broken_metrics_line_is_reported_before_the_model_is_built(finished_run, tmp_path, monkeypatch):
    from cmat_jax.training import build

    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines(keepends=True)
    lines[2] = '{"step": 3, "lo\n'
    open(os.path.join(workdir, "metrics.jsonl"), "w").writelines(lines)
    monkeypatch.setattr(build, "build_model", lambda *a, **k: pytest.fail("the model was built first"))
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 3 is not JSON"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True)))


def test_a_resume_cannot_end_before_its_latest_checkpoint(finished_run, tmp_path):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    before = open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(ValueError, match=r"latest checkpoint is step 6, past step 4 where this config ends the run "
                                         r"\(train\.steps\)"):
        Trainer(parse_run(tiny_config(workdir, data, resume=True, **{"train.steps": 4, "train.decay": "constant"})))
    assert open(os.path.join(workdir, "config.json")).read() == before


def test_a_cmat_resume_cannot_lower_rl_iterations_below_the_run(tmp_path):
    """The CMAT loop ends at train.steps + rl.iterations: a run at iteration 2 refuses rl.iterations=1 before
    building anything, and its config.json keeps saying 2."""
    from cmat_jax.rl import loop
    from tests.rl.test_cmat_loop import small_config

    workdir = tmp_path / "cmat"
    saved = small_config(workdir)  # train.steps 3, rl.iterations 2: its last checkpoint is step 5
    workdir.mkdir()
    (workdir / "config.json").write_text(saved.to_json(indent=2))
    manager = ocp.CheckpointManager(str(workdir / "checkpoints"), options=ocp.CheckpointManagerOptions(create=True))
    manager.save(5, args=ocp.args.Composite(host=ocp.args.JsonSave({"iteration": 2})))
    manager.wait_until_finished()
    manager.close()
    resumed = small_config(workdir, **{"rl.iterations": 1})
    resumed.resume = True
    with pytest.raises(ValueError, match=r"latest checkpoint is step 5, past step 4 where this config ends the run "
                                         r"\(rl\.iterations\); a run cannot go back\. Raise rl\.iterations"):
        loop.CmatRun(parse_run(resumed))
    assert json.loads((workdir / "config.json").read_text())["rl"]["iterations"] == 2


# -- the fallback to the last intact checkpoint --------------------------------


def _zero_length(step_dir):
    data = os.path.join(step_dir, "lora_assistant", "d")
    open(os.path.join(data, sorted(os.listdir(data))[0]), "w").close()


def _truncate(step_dir):
    data = os.path.join(step_dir, "opt_state_assistant", "d")
    path = os.path.join(data, sorted(os.listdir(data))[0])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGES = {
    "zero_length_array_file": _zero_length,
    "truncated_array_file": _truncate,
    "missing_host_item": lambda step_dir: shutil.rmtree(os.path.join(step_dir, "host")),
    "unparsable_metadata": lambda step_dir: open(os.path.join(step_dir, "lora_assistant", "_METADATA"), "w").close(),
}


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_and_ends_like_an_uninterrupted_run(
        finished_run, tmp_path, monkeypatch):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    _zero_length(os.path.join(workdir, "checkpoints", "6"))
    warnings = []
    monkeypatch.setattr(run_state, "logging", types.SimpleNamespace(warning=lambda msg, *a: warnings.append(msg % a),
                                                                    info=lambda *a: None))
    resumed = Trainer(parse_run(tiny_config(workdir, data, resume=True)))
    assert resumed.step == 4
    assert len(warnings) == 1 and warnings[0].startswith(f"checkpoint {workdir}/checkpoints/6 cannot be read")
    assert f"moved it to {workdir}/checkpoints/6.unreadable and resumed from step 4" in warnings[0]
    assert [m["step"] for m in _metrics(workdir)] == [1, 2, 3, 4]  # trimmed to the step restored
    try:
        resumed.train()
    finally:
        resumed.close()
    untimed = lambda records: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]  # noqa: E731
    assert untimed(_metrics(workdir)) == untimed(_metrics(finished_run[0]))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "6.unreadable"]


@pytest.mark.parametrize("damage", ["truncated_array_file", "missing_host_item", "unparsable_metadata"])
def test_other_damage_to_the_latest_checkpoint_falls_back_too(finished_run, tmp_path, damage):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    DAMAGES[damage](os.path.join(workdir, "checkpoints", "6"))
    resumed = Trainer(parse_run(tiny_config(workdir, data, resume=True)))
    resumed.close()
    assert resumed.step == 4
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6.unreadable"]


def test_when_no_checkpoint_restores_it_is_one_error_and_nothing_is_moved(finished_run, tmp_path):
    workdir, data = _copy(finished_run, tmp_path), finished_run[1]
    for step in ("2", "4", "6"):
        shutil.rmtree(os.path.join(workdir, "checkpoints", step, "host"))
    with pytest.raises(CheckpointUnreadable) as error:
        Trainer(parse_run(tiny_config(workdir, data, resume=True)))
    message = str(error.value)
    assert message.startswith(f"no checkpoint in {workdir}/checkpoints can be restored (checkpoint ")
    assert "\n" not in message and "checkpoints/2 lacks its host/ item" in message
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]


# -- signals and disks ---------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_between_steps_with_one_line_and_its_status(tmp_path, signum):
    workdir = tmp_path / "run"
    schedule = ("--config.train.decay=constant", "--config.train.warmup_steps=0")  # a resume may change its length
    run = _train_cli(workdir, *schedule, steps=400)
    deadline = time.monotonic() + 300
    while not (workdir / "metrics.jsonl").exists() or len((workdir / "metrics.jsonl").read_text().splitlines()) < 3:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.2)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    steps = sorted(int(name) for name in os.listdir(workdir / "checkpoints"))
    assert _last_line(stderr) == (f"{signal.Signals(signum).name}: stopped between steps. The latest checkpoint is "
                                  f"step {steps[-1]} in {workdir}/checkpoints: continue with the same command and "
                                  "--config.resume=true.")
    assert not (workdir / "run.lock").exists()
    if signum == signal.SIGINT:  # the resume continues from there
        resumed = _train_cli(workdir, *schedule, "--config.resume=true", steps=steps[-1] + 2)
        _, stderr = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, stderr[-3000:]
        assert [m["step"] for m in _metrics(workdir)] == list(range(1, steps[-1] + 3))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    os.symlink("/dev/full", workdir / "metrics.jsonl")  # every write of a metrics record fails with ENOSPC
    run = _train_cli(workdir, steps=2)
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 1
    line = _last_line(stderr)
    assert line.startswith(f"error: no space left on device (ENOSPC) writing {workdir}/metrics.jsonl; free space "
                           "there, or point --config.workdir or --config.checkpoint.directory at another disk."), line
    assert "Traceback" not in stderr


def test_disk_errors_are_found_inside_the_errors_that_wrap_them():
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file "/ck/2.orbax-'
                             'checkpoint-tmp/lora/": Failed writing: "/ck/2.orbax-checkpoint-tmp/lora/d/ab": Failed '
                             "to write 10 bytes to file 9: No space left on device [os_error_code='28']")
    assert disk_error(tensorstore).line() == ("no space left on device (ENOSPC) writing "
                                              "/ck/2.orbax-checkpoint-tmp/lora/d/ab")
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/w/config.json")
        except OSError as e:
            raise RuntimeError("saving failed") from e
    except RuntimeError as wrapped:
        assert disk_error(wrapped).line() == "read-only file system (EROFS) writing /w/config.json"
    assert disk_error(ValueError("no such thing")) is None


# -- tools and task files ------------------------------------------------------


def test_make_sql_tasks_names_its_flags_and_leaves_no_temporary_file(tmp_path):
    script = os.path.join(REPO, "tools", "make_sql_tasks.py")
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, script, "--n", "3", "--seed", "0", "--out", str(out)], capture_output=True,
                         text=True, env=_env())
    assert run.returncode == 2
    assert run.stderr.strip() == (f"error: --out {out}: {out} is a directory; pass the path of the .jsonl file to "
                                  f"write, e.g. {out}/tasks.jsonl")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no stray .tmp beside it
    run = subprocess.run([sys.executable, script, "--n", "0", "--seed", "0", "--out", str(tmp_path / "t.jsonl")],
                         capture_output=True, text=True, env=_env())
    assert run.returncode == 2 and run.stderr.strip().startswith("error: --n is 0;")


def test_fuzz_sql_refuses_a_report_path_it_cannot_write_before_it_runs(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "fuzz_sql.py"), "--json",
                          str(tmp_path / "missing" / "report.json")], capture_output=True, text=True, env=_env())
    assert run.returncode == 2
    assert _last_line(run.stderr).endswith(f"--json {tmp_path}/missing/report.json: expected a file path in an "
                                           "existing directory")


def test_task_files_and_counts_are_reported_by_what_they_are(tmp_path):
    from cmat_jax.envs.sql.tasks import load_tasks
    from cmat_jax.training.config import cmat_config

    with pytest.raises(IsADirectoryError, match=re.escape(f"{tmp_path}' is a directory")):
        load_tasks(tmp_path)
    config = cmat_config()
    config.tasks.train_count = 0
    with pytest.raises(ValueError, match=r"tasks\.train_count must be an integer >= 1 \(generated training tasks\), "
                                         r"found 0"):
        parse_run(config)
