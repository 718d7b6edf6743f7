"""SIGINT and SIGTERM as one exception, `Interrupted`, raised where a program can stop cleanly.

`install()` (cli.run calls it) makes both signals raise `Interrupted`, a
KeyboardInterrupt that knows its signal and the exit status a shell reports
for it (130 for SIGINT, 143 for SIGTERM), so a command ends with one line
instead of a traceback.

A training run stops only between steps: after `between_steps()` (train.py
calls it) a signal is only recorded, and the loops call `check()` at each step
boundary, which raises Interrupted once one was. The step in flight finishes;
the `finally` blocks then wait for a checkpoint being written and close their
files, so nothing is left half-written. Raising at an arbitrary point instead
lands in library code (a gc callback of jax's, an XLA compilation) and can
crash the interpreter at exit. A second signal before the run has stopped
ends the process at once: a checkpoint still being written is lost, the ones
before it are intact (orbax renames a step into place only when complete).

Without `install()` (library use, tests) the signals keep Python's defaults
and `check()` does nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `status` is the exit status a shell reports for it (128 + signal)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.status = 128 + signum
        super().__init__(f"{self.name} received")


_installed = False
_deferred = False  # between_steps() was called: signals are recorded for check()
_pending: Optional[int] = None  # the signal received and not yet raised (or being handled)


def _handle(signum: int, frame) -> None:
    global _pending
    if _pending is not None:
        print(f"{signal.Signals(signum).name} again: stopping now; a checkpoint still being written is lost, the "
              "earlier ones are intact", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _pending = signum
    if not _deferred:
        raise Interrupted(signum)


def install() -> None:
    """Makes SIGINT and SIGTERM raise Interrupted in the main thread (once; from another thread: nothing)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    _installed = True


def between_steps() -> None:
    """From now on a signal is raised by the next check() (the end of the step in flight), not where it lands."""
    global _deferred
    _deferred = True


def check() -> None:
    """Raises Interrupted when a signal arrived since between_steps(); a loop calls it at each step boundary."""
    if _pending is not None:
        raise Interrupted(_pending)
