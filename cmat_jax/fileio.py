"""Files the project writes and reads line by line: atomic writes and line-numbered JSONL.

`atomic_write(path)` opens a temporary file beside `path` and renames it over
`path` only when the `with` block ends without an error, so a reader (or a run
killed mid-write and resumed) sees the old file or the new one, never half of
one; on an error the temporary file is removed and `path` is left as it was.

`read_jsonl(path, error_type)` yields one `JsonlLine` (line number, decoded
value, raw text) per non-blank line. A line that is not UTF-8, not JSON, or
nested past Python's recursion limit raises `error_type` (default `JsonlError`,
which also carries the path, line number and detail) with a message that starts
with `<path>:<line>: `. `partial_last_line=True` skips, with a warning, a last
line that does not decode: what a writer killed mid-line leaves behind.

`disk_error(error)` finds a full disk (ENOSPC, EDQUOT) or a read-only file
system (EROFS) in an exception, its causes, or the text of an error that wraps
one (tensorstore's, in an orbax checkpoint write): a `DiskError` of what
happened and the path written, for a one-line report. `atomic_write` gives the
errors of its writes, which name no file, the path they were writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from typing import IO, Any, Iterator, NamedTuple, Optional

from absl import logging


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """`with atomic_write(path) as f:` writes `path` whole or not at all ("w" text as UTF-8, or "wb")."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode is {mode!r}; expected 'w' (UTF-8 text) or 'wb' (bytes)")
    path = os.fspath(path)
    tmp = path + ".tmp"
    encoding = "utf-8" if mode == "w" else None
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno:  # a failed write or flush names no file
            raise OSError(e.errno, e.strerror, path) from e
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_options: Any) -> None:
    """json.dump(obj) to `path` atomically, ending with a newline."""
    with atomic_write(path) as f:
        json.dump(obj, f, **dump_options)
        f.write("\n")


class JsonlLine(NamedTuple):
    number: int  # 1-based line number in the file
    value: Any  # the decoded JSON value
    text: str  # the line as read, newline included when the file had one


class JsonlError(ValueError):
    """A JSONL line that does not decode; the message is `<path>:<line>: <problem> (<detail>); <advice>`."""

    def __init__(self, path: str, line_number: int, problem: str, detail: str, advice: str):
        self.path, self.line_number, self.problem, self.detail = path, line_number, problem, detail
        super().__init__(f"{path}:{line_number}: {problem} ({detail}); {advice}")


def _decode(raw: bytes, path: str, number: int) -> tuple[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlError(path, number, "not UTF-8 text", f"byte {raw[e.start]:#04x} at column {e.start + 1}",
                         "save the file as UTF-8") from None
    if not text.strip():
        return text, None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        where = e.msg.removesuffix(" at")  # some messages end in "at" already
        raise JsonlError(path, number, "not valid JSON", f"{where} at column {e.colno}",
                         "each line must hold one JSON value") from None
    except RecursionError:
        raise JsonlError(path, number, "JSON nested too deeply", "deeper than Python's parser can read",
                         "flatten this record") from None


def read_jsonl(path: str | os.PathLike, error_type: type[ValueError] = JsonlError, *,
               partial_last_line: bool = False) -> Iterator[JsonlLine]:
    """The non-blank lines of a JSONL file, decoded; a bad line raises `error_type` (JsonlError's message)."""
    path = os.fspath(path)
    try:
        yield from _read_jsonl(path, partial_last_line)
    except JsonlError as e:
        if error_type is JsonlError:
            raise
        raise error_type(str(e)) from None


def _read_jsonl(path: str, partial_last_line: bool) -> Iterator[JsonlLine]:
    with open(path, "rb") as f:
        pending = None  # one line of look-ahead, to know which line is the last
        for number, raw in enumerate(f, start=1):
            if pending is not None:
                yield from _line(path, *pending)
            pending = (number, raw)
    if pending is None:
        return
    try:
        line = list(_line(path, *pending))
    except JsonlError as e:
        if not partial_last_line:
            raise
        logging.warning("%s; dropping it: a writer killed mid-line leaves such a last line", e)
        return
    yield from line


def _line(path: str, number: int, raw: bytes) -> Iterator[JsonlLine]:
    text, value = _decode(raw, path, number)
    if text.strip():
        yield JsonlLine(number, value, text)



# errno -> what it means for a writer; tensorstore's messages carry the number ([os_error_code='28']).
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system"}
_DISK_TEXT = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system|"
                        r"os_error_code='(\d+)'")
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


class DiskError(NamedTuple):
    """A full disk or a read-only file system: what happened, its errno name, the path written (or None)."""

    what: str
    code: str
    path: Optional[str]

    def line(self) -> str:
        return f"{self.what} ({self.code}) writing {self.path or 'a file the error does not name'}"


def disk_error(error: BaseException) -> Optional[DiskError]:
    """The DiskError in `error` or in an error it wraps (its cause, its context, or a message that quotes
    one), else None; of several, the innermost (the first to fail) that names a path."""
    found, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            path = os.fspath(error.filename) if error.filename is not None else None
            found.append(DiskError(DISK_ERRORS[error.errno], errno.errorcode[error.errno], path))
        else:
            text = disk_error_text(str(error))
            found.extend([text] if text else [])
        error = error.__cause__ or error.__context__
    return next((f for f in reversed(found) if f.path), found[0] if found else None)


def disk_error_text(text: str) -> Optional[DiskError]:
    """The DiskError a message (e.g. a library's log line) reports, with the last path it quotes, or None."""
    for match in _DISK_TEXT.finditer(text):
        number = int(match.group(1)) if match.group(1) else next(
            n for n, what in DISK_ERRORS.items() if what.lower() == match.group(0).lower())
        if number in DISK_ERRORS:
            paths = _QUOTED_PATH.findall(text)
            return DiskError(DISK_ERRORS[number], errno.errorcode[number], paths[-1] if paths else None)
    return None
