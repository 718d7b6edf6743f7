"""tools/tpu_vm.py: the gcloud commands it prints (no gcloud needed), and the local launcher's process handling."""

import importlib.util
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "tpu_vm.py")
spec = importlib.util.spec_from_file_location("tpu_vm", TOOL)
tpu_vm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tpu_vm)

CLOUD = ["--name", "cmat", "--zone", "us-east5-b", "--project", "proj", "--dry-run"]


def printed(capsys, *argv):
    assert tpu_vm.main(list(argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("+ ") for line in lines)
    return [shlex.split(line[2:]) for line in lines]


def option(command, name):
    return next(part.split("=", 1)[1] for part in command if part.startswith(f"--{name}="))


def test_create_ssh_logs_delete(capsys):
    [create] = printed(capsys, "create", *CLOUD, "--accelerator-type", "v5litepod-16", "--spot")
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cmat"]
    assert {"--zone=us-east5-b", "--project=proj", "--accelerator-type=v5litepod-16",
            "--version=v2-alpha-tpuv5-lite", "--spot"} <= set(create)
    [create] = printed(capsys, "create", *CLOUD, "--accelerator-type", "v6e-16")
    assert option(create, "version") == "v2-alpha-tpuv6e"
    [ssh] = printed(capsys, "ssh", *CLOUD, "--worker", "1")
    assert ssh[4:6] == ["ssh", "cmat"] and "--worker=1" in ssh
    [logs] = printed(capsys, "logs", *CLOUD, "--follow")
    assert option(logs, "command") == "tail -n 100 -f ~/cmat_run.log" and "--worker=0" in logs
    [delete] = printed(capsys, "delete", *CLOUD)
    assert delete[4:6] == ["delete", "cmat"] and "--quiet" in delete


def test_setup_copies_the_tree_and_runs_the_readme_install_on_every_worker(capsys):
    archive, scp, ssh = printed(capsys, "setup", *CLOUD)
    assert archive[:2] == ["git", "-C"] and archive[-1] == "HEAD"
    assert scp[4] == "scp" and "--worker=all" in scp and scp[-1] == "--project=proj"
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    script = option(ssh, "command")
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert f"```bash\n{tpu_vm.INSTALL_COMMAND} && python -m cmat_jax.train" in readme  # the README's own command
    steps = script.split(" && ")
    assert tpu_vm.INSTALL_COMMAND in steps and steps.index("cd ~/cmat_jax") < steps.index(tpu_vm.INSTALL_COMMAND)
    assert steps[-1].startswith('pip install "jax[tpu]==')


def test_run_starts_the_command_on_every_worker_in_the_background(capsys):
    job = ["python", "-m", "cmat_jax.train", "--config", "configs/sft_tiny.py", "--config.workdir=gs://b/run 1"]
    [ssh] = printed(capsys, "run", *CLOUD, "--", *job)
    assert "--worker=all" in ssh
    script = option(ssh, "command")
    assert script.startswith("cd ~/cmat_jax && . ~/cmat_venv/bin/activate && nohup bash -c ")
    assert script.endswith("> ~/cmat_run.log 2>&1 < /dev/null &")
    # The job reaches the worker's shell as exactly these arguments.
    inner = shlex.split(script.split("nohup bash -c ", 1)[1].split(" > ~/cmat_run.log")[0])[0]
    assert shlex.split(inner) == job
    [ssh] = printed(capsys, "run", *CLOUD, "--foreground", "--", *job)
    assert shlex.split(option(ssh, "command").split(" && ")[-1]) == job


def test_mistakes_are_one_line(capsys):
    assert tpu_vm.main(["create", *CLOUD, "--accelerator-type", "v9x-8"]) == 2
    assert "no default runtime for accelerator type 'v9x-8'" in capsys.readouterr().err
    assert tpu_vm.main(["run", *CLOUD]) == 2
    assert "run needs the command to run after --" in capsys.readouterr().err
    env = dict(os.environ, PATH="/nonexistent")
    result = subprocess.run([sys.executable, TOOL, "delete", "--name", "x", "--zone", "z"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: gcloud is not on PATH")


def local(*command, timeout=None):
    argv = [sys.executable, TOOL, "local", "--num-processes", "3"] + \
        (["--timeout", str(timeout)] if timeout else []) + ["--", sys.executable, "-c", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_local_gives_each_process_its_settings_and_prefixes_the_others():
    result = local("import os; print(os.environ['CMAT_PROCESS_ID'], os.environ['CMAT_NUM_PROCESSES'], "
                   "os.environ['JAX_NUM_CPU_DEVICES'], os.environ['JAX_COORDINATOR_ADDRESS'].startswith('localhost:'))")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["0 3 1 True", "[process 1] 1 3 1 True", "[process 2] 2 3 1 True"]


def test_local_stops_the_others_when_one_fails_and_on_timeout():
    # Process 1 fails at once; the others would sleep for minutes.
    result = local("import os, sys, time; i = int(os.environ['CMAT_PROCESS_ID']); "
                   "sys.exit(7) if i == 1 else time.sleep(600)")
    assert result.returncode == 7 and "a process exited with status 7; stopping the others" in result.stderr
    result = local("import time; time.sleep(600)", timeout=2)
    assert result.returncode == tpu_vm.TIMEOUT_STATUS and "--timeout 2 s passed" in result.stderr


@pytest.mark.parametrize("argv, message", [
    (["local", "--num-processes", "2"], "local needs the command to run after --"),
    (["local", "--num-processes", "0", "--", "true"], "--num-processes and --cpu-devices must be >= 1"),
])
def test_local_mistakes(capsys, argv, message):
    assert tpu_vm.main(argv) == 2
    assert message in capsys.readouterr().err
