"""The processes of a run: starting JAX's multi-controller runtime, and what each process holds.

A TPU slice larger than one host (or several GPU hosts, or `tools/tpu_vm.py
local`'s CPU processes) runs the same command once per host; after
`jax.distributed.initialize` the processes are one program whose arrays span
every host's devices. Every process must then enter every jitted program with
the same global shapes and (for arrays it holds whole) the same values.

The config section `distributed` (training/config.py) decides whether to start it:

  initialize           'auto': start when an address, count or id is given (in the
                       section or the environment), or on a machine with TPU chips
                       (a Cloud TPU VM; jax finds the slice's hosts itself); else
                       stay one process. 'on': always start (what is not given jax
                       detects: TPU VMs, Slurm, Open MPI). 'off': never.
  coordinator_address  host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)
  num_processes        0: $CMAT_NUM_PROCESSES, else detected
  process_id           -1: $CMAT_PROCESS_ID, else detected
  initialization_timeout_s

What the rest of the code asks of this module:
- `process_rows(sharding, rows)`: the rows of a [rows, ...] batch whose shards
  live on this process's devices (a process builds only those rows);
- `host_values(tree)`: arrays as numpy on every process, gathering those whose
  shards span other processes (sampler outputs);
- `on_main(fn)`: a decision taken by process 0 alone (it may read files only it
  holds) and shared with all, errors included, so every process fails alike;
- `gather_objects(value)`: every process's `value` (picklable), in process order, on
  every process; `any_process(flag)`: whether any process's flag is set (the
  rollout engine plays each process's share of the episodes and joins them);
- `scratch_dir()`: a private directory for files a process needs but must not
  write into the shared workdir.
With one process every one of these is the single-process behaviour.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pickle
import shutil
import tempfile
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
from absl import logging

MODES = ("auto", "on", "off")
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # jax's own name
ENV_NUM_PROCESSES = "CMAT_NUM_PROCESSES"
ENV_PROCESS_ID = "CMAT_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class Setup:
    """Arguments of jax.distributed.initialize; None leaves one to jax's cluster detection."""

    coordinator_address: Optional[str]
    num_processes: Optional[int]
    process_id: Optional[int]
    initialization_timeout_s: int


def _int_setting(value, env_name: str, environ: Mapping[str, str], unset: int, field: str) -> Optional[int]:
    if value is not None and int(value) != unset:
        return int(value)
    text = environ.get(env_name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"${env_name} is {text!r}; expected an integer (or unset it and set "
                         f"distributed.{field})") from None


def _tpu_chips_present() -> bool:
    """TPU chips on this machine's PCI bus (jax's own check; Google's vendor id alone also matches the
    network cards of ordinary Compute Engine VMs)."""
    try:
        from jax._src.hardware_utils import num_available_tpu_chips_and_device_id
    except ImportError:
        logging.warning("cannot check for TPU chips with this jax; on a TPU slice of several hosts set "
                        "distributed.initialize='on'")
        return False
    try:
        return num_available_tpu_chips_and_device_id()[0] > 0
    except OSError:
        return False


def resolve(settings, environ: Mapping[str, str] = os.environ,
            tpu_present: Callable[[], bool] = _tpu_chips_present) -> Optional[Setup]:
    """The start-up a `distributed` config section asks for, or None to stay one process.

    Raises ValueError (one line) for settings that cannot work.
    """
    mode = str(settings.initialize)
    if mode not in MODES:
        raise ValueError(f"distributed.initialize is {mode!r}; choose from {', '.join(MODES)}")
    address = str(settings.coordinator_address or "").strip() or environ.get(ENV_COORDINATOR, "").strip() or None
    count = _int_setting(settings.num_processes, ENV_NUM_PROCESSES, environ, 0, "num_processes")
    index = _int_setting(settings.process_id, ENV_PROCESS_ID, environ, -1, "process_id")
    timeout = int(settings.initialization_timeout_s)
    if timeout < 1:
        raise ValueError(f"distributed.initialization_timeout_s must be >= 1, found {timeout}")
    if count is not None and count < 1:
        raise ValueError(f"distributed.num_processes is {count}; expected >= 1 (or 0 to detect it)")
    if index is not None and index < 0:
        raise ValueError(f"distributed.process_id is {index}; expected >= 0 (or -1 to detect it)")
    if count is not None and index is not None and index >= count:
        raise ValueError(f"distributed.process_id is {index} but distributed.num_processes is {count}; ids run "
                         f"from 0 to {count - 1}")
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"distributed.coordinator_address is {address!r}; expected host:port of process 0, "
                             "e.g. 10.0.0.2:8476")
    if mode == "off":
        return None
    explicit = address is not None or count is not None or index is not None
    if mode == "auto" and not explicit and not tpu_present():
        return None
    if explicit and (count is None) != (index is None):
        given, missing = ("num_processes", "process_id") if index is None else ("process_id", "num_processes")
        raise ValueError(f"distributed.{given} is set but distributed.{missing} is not; give both (or neither, "
                         "on a cluster jax detects)")
    if count is not None and count > 1 and address is None:
        raise ValueError(f"distributed.num_processes is {count} but no coordinator address is given; set "
                         f"distributed.coordinator_address=host:port (process 0's) or ${ENV_COORDINATOR}")
    return Setup(address, count, index, timeout)


def initialize(settings, **resolve_kwargs) -> bool:
    """Starts the multi-controller runtime if `settings` (config.distributed) ask for it; True if started.

    Call it before anything touches a JAX device. Errors are ValueError with one line.
    """
    setup = resolve(settings, **resolve_kwargs)
    if setup is None:
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(setup.coordinator_address, setup.num_processes, setup.process_id,
                                   initialization_timeout=setup.initialization_timeout_s)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"jax.distributed.initialize failed ({first}); on a cluster jax cannot detect, set "
                         "distributed.coordinator_address, num_processes and process_id") from None
    return True


def is_main() -> bool:
    return jax.process_index() == 0


# -- what each process holds ---------------------------------------------------


def process_rows(sharding: jax.sharding.Sharding, rows: int, ndim: int = 2) -> tuple[int, ...]:
    """The rows of a [rows, ...] array with `sharding` that this process's devices hold, increasing: what
    this process loads for `jax.make_array_from_process_local_data` (usually one block; a mesh whose device
    order alternates between hosts gives several)."""
    shape = (rows,) + (1,) * (ndim - 1)
    held = set()
    for index in sharding.addressable_devices_indices_map(shape).values():
        held.update(range(*index[0].indices(rows)))
    return tuple(sorted(held))


def check_process_share(rows: int, field: str) -> None:
    """Each process loads an equal share of a global batch of `rows` rows."""
    count = jax.process_count()
    if rows % count:
        raise ValueError(f"{field} ({rows}) must be a multiple of the process count ({count}): each process "
                         "loads an equal share of the rows")


def host_values(tree):
    """`jax.device_get(tree)`, except that arrays whose shards span other processes are gathered first
    (every process gets the whole value)."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return multihost_utils.process_allgather(x, tiled=True)
        return x

    return jax.device_get(jax.tree.map(one, tree))


def _bytes_to_all(payload: bytes) -> bytes:
    """Process 0's `payload` on every process (others pass anything)."""
    from jax.experimental import multihost_utils

    length = int(multihost_utils.broadcast_one_to_all(np.asarray([len(payload)], np.int64))[0])
    buffer = np.zeros(length, np.uint8)
    if is_main():
        buffer[:] = np.frombuffer(payload, np.uint8)
    return multihost_utils.broadcast_one_to_all(buffer).tobytes()


_ERRORS = {"ValueError": ValueError, "FileExistsError": FileExistsError, "FileNotFoundError": FileNotFoundError,
           "OSError": OSError, "KeyError": KeyError, "TypeError": TypeError}


def on_main(fn: Callable[[], Any]) -> Any:
    """`fn()` run by process 0 only; its JSON result, or its error (same type and message), on every process."""
    if jax.process_count() == 1:
        return fn()
    message = b""
    if is_main():
        try:
            message = json.dumps({"value": fn()}).encode()
        except tuple(_ERRORS.values()) as e:
            message = json.dumps({"error": type(e).__name__, "message": str(e)}).encode()
    reply = json.loads(_bytes_to_all(message).decode())
    if "error" in reply:
        raise _ERRORS.get(reply["error"], ValueError)(reply["message"])
    return reply["value"]


def gather_objects(value: Any) -> list:
    """Every process's `value` (picklable), in process order, on every process; [value] with one process.

    Every process must call it at the same point of the program (it is a collective).
    """
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([payload.size], np.int64)).reshape(-1)
    buffer = np.zeros(int(lengths.max()), np.uint8)
    buffer[:payload.size] = payload
    buffers = multihost_utils.process_allgather(buffer)
    return [pickle.loads(buffers[i, :int(n)].tobytes()) for i, n in enumerate(lengths)]


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (a collective, like gather_objects)."""
    return any(gather_objects(bool(flag)))


def scratch_dir() -> str:
    """A directory private to this process (created once), for files it must not write into a shared workdir."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.mkdtemp(prefix=f"cmat_process{jax.process_index()}_")
        atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
    return _SCRATCH


_SCRATCH: Optional[str] = None
