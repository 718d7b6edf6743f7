"""Statement deadlines: one per connection, checked by every Python callback, enforced by a watchdog.

SQLite checks for an interrupt only between VM instructions, and one instruction
can run long: a sort, or a call of a Python function or collation. So a deadline
is enforced three ways:

- `Deadline.check()` at the top of every Python function the sandbox registers
  (it raises `StatementTimeout`, which SQLite turns into a statement error), and
  `Deadline.passed()` in the collation, which cannot raise per call without
  cost (database.py raises once, and the sqlite3 module then skips the rest of
  the comparisons cheaply);
- the connection's progress handler (every 1,000 VM instructions);
- `Watchdog`: one daemon thread per process that calls `Connection.interrupt()`
  on every connection whose armed deadline has passed, so a statement stops at
  its next instruction even when no progress handler or callback runs.

Arming and disarming take one lock; the watchdog polls every `POLL_S` seconds
while anything is armed and sleeps otherwise.
"""

from __future__ import annotations

import itertools
import math
import os
import sqlite3
import threading
import time

POLL_S = 0.05  # watchdog granularity: an interrupt lands at most this late


class StatementTimeout(Exception):
    """Raised inside a callback when its statement's deadline has passed."""


class Deadline:
    """The moment the current statement of one connection must stop (inf when none runs)."""

    __slots__ = ("at",)

    def __init__(self):
        self.at = math.inf

    def passed(self) -> bool:
        return time.monotonic() > self.at

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise StatementTimeout()


class Watchdog:
    """Interrupts connections whose deadline has passed. Use the process-wide `WATCHDOG`."""

    def __init__(self):
        self._tickets = itertools.count()
        self._reset()

    def _reset(self) -> None:
        """A fresh state: at construction, and in a forked child (which has no watchdog thread, and
        whose lock may have been held by the parent's at the fork)."""
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, sqlite3.Connection]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, conn: sqlite3.Connection, at: float) -> int:
        """Interrupt `conn` once time.monotonic() passes `at`, unless disarmed first; returns a ticket."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sql-statement-watchdog", daemon=True)
                self._thread.start()
            ticket = next(self._tickets)
            self._armed[ticket] = (at, conn)
        self._wake.set()
        return ticket

    def disarm(self, ticket: int) -> None:
        """After this returns, the watchdog no longer interrupts for `ticket` (holding the lock, it cannot
        be half-way through interrupting the next statement of the same connection)."""
        with self._lock:
            self._armed.pop(ticket, None)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(POLL_S)
            now = time.monotonic()
            with self._lock:
                for ticket, (at, conn) in list(self._armed.items()):
                    if at <= now:
                        del self._armed[ticket]
                        try:
                            conn.interrupt()
                        except sqlite3.Error:  # closed meanwhile
                            pass
                if not self._armed:
                    self._wake.clear()  # armed again later: arm() sets it after adding under the lock


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._reset)
