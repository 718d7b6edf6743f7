"""Cloud TPU VM jobs, and their stand-in on this machine (docs/tpu.md).

    python tools/tpu_vm.py create --name cmat --zone us-east5-b --accelerator-type v5litepod-16
    python tools/tpu_vm.py setup  --name cmat --zone us-east5-b
    python tools/tpu_vm.py run    --name cmat --zone us-east5-b -- python -m cmat_jax.train --config configs/x.py
    python tools/tpu_vm.py logs   --name cmat --zone us-east5-b [--worker 0] [--follow]
    python tools/tpu_vm.py ssh    --name cmat --zone us-east5-b [--worker 0]
    python tools/tpu_vm.py delete --name cmat --zone us-east5-b
    python tools/tpu_vm.py local --num-processes 2 [--cpu-devices 4] -- python -m cmat_jax.train --config ...

The cloud commands print each `gcloud compute tpus tpu-vm ...` command, then run
it; with --dry-run they only print. `setup` and `run` act on every worker
(--worker=all): a slice of several hosts runs the same command on each, and the
processes find each other (jax.distributed on a TPU VM needs no settings).
`setup` copies the committed tree (git archive HEAD), makes a Python 3.11
virtual environment, installs the project with the README's own install
command, then the TPU build of the jax version that install chose.
`run` starts the command in the background on every worker, its output in
~/cmat_run.log there (`logs` shows it), so a job survives the ssh session.

`local` starts N processes on this machine, each with --cpu-devices CPU devices
and the coordinator on localhost: the stand-in for N hosts (cross-process
collectives go over gloo). Each line of output comes through whole: process
0's as it is, the others' prefixed `[process i]`. When one process fails the others are
stopped and its exit status is returned; --timeout (seconds) stops all (status 124).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

INSTALL_COMMAND = "pip install -e ."  # the README's install command
REMOTE_DIR = "cmat_jax"  # the project's directory in each worker's home
REMOTE_VENV = "cmat_venv"
REMOTE_LOG = "cmat_run.log"
ARCHIVE = "cmat_jax_src.tar.gz"
PYTHON = "python3.11"
# Runtime (OS image) per TPU generation, by the accelerator type's prefix (Cloud TPU's documented names).
RUNTIME_VERSIONS = {"v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e",
                    "v4": "tpu-ubuntu2204-base"}
TIMEOUT_STATUS = 124
STOP_GRACE_S = 10.0


class ToolError(Exception):
    """A mistake in the command line or the environment; the message is one line."""


# -- gcloud commands ----------------------------------------------------------------


def _gcloud(verb: str, args, *extra: str) -> list[str]:
    command = ["gcloud", "compute", "tpus", "tpu-vm", verb, args.name, f"--zone={args.zone}"]
    if args.project:
        command.append(f"--project={args.project}")
    return command + list(extra)


def runtime_version(accelerator_type: str) -> str:
    prefix = accelerator_type.split("-")[0]
    if prefix not in RUNTIME_VERSIONS:
        raise ToolError(f"no default runtime for accelerator type {accelerator_type!r} (known prefixes: "
                        f"{', '.join(RUNTIME_VERSIONS)}); pass --version")
    return RUNTIME_VERSIONS[prefix]


def create_commands(args) -> list[list[str]]:
    extra = [f"--accelerator-type={args.accelerator_type}",
             f"--version={args.version or runtime_version(args.accelerator_type)}"]
    if args.spot:
        extra.append("--spot")
    return [_gcloud("create", args, *extra)]


def setup_script() -> str:
    """What `setup` runs on every worker: unpack, a Python 3.11 venv, the README's install, TPU jax."""
    return " && ".join([
        "sudo apt-get update -qq",
        f"sudo apt-get install -y -qq {PYTHON} {PYTHON}-venv",
        f"{PYTHON} -m venv ~/{REMOTE_VENV}",
        f". ~/{REMOTE_VENV}/bin/activate",
        f"rm -rf ~/{REMOTE_DIR} && mkdir -p ~/{REMOTE_DIR}",
        f"tar -xzf ~/{ARCHIVE} -C ~/{REMOTE_DIR}",
        f"cd ~/{REMOTE_DIR}",
        INSTALL_COMMAND,
        # The TPU build of the jax version the install resolved (the install alone gives CPU jax).
        'pip install "jax[tpu]==$(python -c "import jax; print(jax.__version__)")"',
    ])


def setup_commands(args, archive: str) -> list[list[str]]:
    scp = ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:~/{ARCHIVE}", f"--zone={args.zone}",
           "--worker=all"] + ([f"--project={args.project}"] if args.project else [])
    return [["git", "-C", args.source, "archive", "--format=tar.gz", "-o", archive, "HEAD"], scp,
            _gcloud("ssh", args, "--worker=all", f"--command={setup_script()}")]


def run_script(command: Sequence[str], foreground: bool) -> str:
    job = shlex.join(command)
    prefix = f"cd ~/{REMOTE_DIR} && . ~/{REMOTE_VENV}/bin/activate && "
    if foreground:
        return prefix + job
    # nohup + </dev/null: the job outlives the ssh session, which returns at once.
    return prefix + f"nohup bash -c {shlex.quote(job)} > ~/{REMOTE_LOG} 2>&1 < /dev/null &"


def run_commands(args, command: Sequence[str]) -> list[list[str]]:
    if not command:
        raise ToolError("run needs the command to run after --, e.g. -- python -m cmat_jax.train --config ...")
    return [_gcloud("ssh", args, "--worker=all", f"--command={run_script(command, args.foreground)}")]


def logs_commands(args) -> list[list[str]]:
    tail = f"tail -n {args.lines}{' -f' if args.follow else ''} ~/{REMOTE_LOG}"
    return [_gcloud("ssh", args, f"--worker={args.worker}", f"--command={tail}")]


def ssh_commands(args) -> list[list[str]]:
    return [_gcloud("ssh", args, f"--worker={args.worker}")]


def delete_commands(args) -> list[list[str]]:
    return [_gcloud("delete", args, "--quiet")]


def execute(commands: list[list[str]], dry_run: bool) -> int:
    """Prints each command; runs them in order unless `dry_run`, stopping at the first failure."""
    if not dry_run and shutil.which("gcloud") is None:
        raise ToolError("gcloud is not on PATH; install the Google Cloud CLI (cloud.google.com/sdk) and run "
                        "`gcloud auth login`, or pass --dry-run to print the commands")
    for command in commands:
        print("+ " + shlex.join(command), flush=True)
        if dry_run:
            continue
        status = subprocess.call(command)
        if status:
            return status
    return 0


# -- local: N processes on this machine ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(base: dict, index: int, count: int, cpu_devices: int, port: int) -> dict:
    """The environment of local process `index`: CPU devices, and the settings cmat_jax.distributed reads."""
    return dict(base, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(cpu_devices),
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}", CMAT_NUM_PROCESSES=str(count),
                CMAT_PROCESS_ID=str(index))


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix.encode() + line)
        sys.stdout.buffer.flush()
    stream.close()


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each live process group, SIGKILL to those still alive after STOP_GRACE_S."""
    live = [p for p in processes if p.poll() is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    for p in live:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run_local(command: Sequence[str], count: int, cpu_devices: int, port: Optional[int] = None,
              timeout_s: Optional[float] = None) -> int:
    """Runs `command` as `count` processes of one JAX program on this machine; the exit status."""
    if not command:
        raise ToolError("local needs the command to run after --, e.g. -- python -m cmat_jax.train --config ...")
    if count < 1 or cpu_devices < 1:
        raise ToolError(f"--num-processes and --cpu-devices must be >= 1, found {count} and {cpu_devices}")
    port = port or free_port()
    print(f"local: {count} processes x {cpu_devices} CPU devices, coordinator localhost:{port}", file=sys.stderr,
          flush=True)
    processes: list[subprocess.Popen] = []
    relays = []
    stop_signal: list[int] = []

    def on_signal(signum, frame):
        stop_signal.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            env = process_env(os.environ, index, count, cpu_devices, port)
            # Every stdout goes through a relay that writes whole lines, so process 0's lines can't be cut
            # by another's (an unbuffered child writes print()'s pieces one at a time).
            p = subprocess.Popen(list(command), env=env, start_new_session=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT if index > 0 else None)
            processes.append(p)
            prefix = f"[process {index}] " if index > 0 else ""
            relay = threading.Thread(target=_relay, args=(p.stdout, prefix), daemon=True)
            relay.start()
            relays.append(relay)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        status = 0
        while True:
            codes = [p.poll() for p in processes]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                status = failed[0]
                print(f"local: a process exited with status {status}; stopping the others", file=sys.stderr,
                      flush=True)
                break
            if all(c == 0 for c in codes):
                break
            if stop_signal:
                status = 128 + stop_signal[0]
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"local: --timeout {timeout_s:g} s passed; stopping every process", file=sys.stderr, flush=True)
                status = TIMEOUT_STATUS
                break
            time.sleep(0.1)
        return status
    finally:
        _stop(processes)
        for relay in relays:
            relay.join(timeout=5)
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- command line -------------------------------------------------------------------


def parse_args(argv: Sequence[str]):
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    def cloud(name: str, help_text: str):
        p = verbs.add_parser(name, help=help_text)
        p.add_argument("--name", required=True, help="the TPU VM (slice) name")
        p.add_argument("--zone", required=True, help="its zone, e.g. us-east5-b")
        p.add_argument("--project", default="", help="the Google Cloud project (default: gcloud's)")
        p.add_argument("--dry-run", action="store_true", help="print the commands without running them")
        return p

    p = cloud("create", "create a TPU VM or slice")
    p.add_argument("--accelerator-type", required=True, help="e.g. v5litepod-16, v5p-16, v6e-16")
    p.add_argument("--version", default="", help="runtime version (default: by TPU generation)")
    p.add_argument("--spot", action="store_true", help="a Spot VM (cheaper, may be preempted)")
    p = cloud("setup", "copy the committed tree to every worker and install it")
    p.add_argument("--source", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help="the git checkout to copy (default: this one)")
    p = cloud("run", "start a command on every worker (after --)")
    p.add_argument("--foreground", action="store_true", help="stay attached and stream its output")
    p = cloud("logs", "show the job's output on a worker")
    p.add_argument("--worker", default="0", help="worker index, or all")
    p.add_argument("--lines", type=int, default=100)
    p.add_argument("--follow", action="store_true")
    p = cloud("ssh", "open a shell on a worker")
    p.add_argument("--worker", default="0", help="worker index")
    cloud("delete", "delete the TPU VM or slice")
    p = verbs.add_parser("local", help="run a command (after --) as N processes on this machine")
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--cpu-devices", type=int, default=1, help="CPU devices per process")
    p.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    p.add_argument("--timeout", type=float, default=None, help="stop every process after this many seconds")
    args = parser.parse_args(argv)
    if args.verb not in ("run", "local") and command:
        parser.error(f"{args.verb} takes no command after --")
    return args, command


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.verb == "local":
            return run_local(command, args.num_processes, args.cpu_devices, args.port or None, args.timeout)
        if args.verb == "setup":
            return execute(setup_commands(args, os.path.join("/tmp", ARCHIVE)), args.dry_run)
        commands = {"create": create_commands, "logs": logs_commands, "ssh": ssh_commands,
                    "delete": delete_commands}.get(args.verb)
        if commands is not None:
            return execute(commands(args), args.dry_run)
        return execute(run_commands(args, command), args.dry_run)
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
