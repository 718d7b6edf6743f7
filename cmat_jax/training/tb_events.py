"""TensorBoard event files: read their records, and drop the events past a step.

An event file is a sequence of TFRecords, each framing one serialized `Event`
proto: uint64 length, uint32 masked CRC-32C of those 8 bytes, the data, uint32
masked CRC-32C of the data (little-endian). A resumed run re-runs the steps
its killed predecessor logged after its last checkpoint; `drop_events_after`
rewrites each event file without the events past the restored step (kept
records are copied byte for byte, each file replaced atomically), so every
reader, TensorBoard or another, sees each step once. A torn last record (a
writer killed mid-record) is dropped as well.
"""

from __future__ import annotations

import os
import struct
from typing import Iterator

from absl import logging
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from cmat_jax.fileio import atomic_write

EVENT_FILE_MARK = "tfevents"  # TensorBoard reads the files whose names contain this


def event_files(directory: str) -> list[str]:
    """The event files of one TensorBoard run directory, in the order TensorBoard reads them (by name)."""
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if EVENT_FILE_MARK in name and not name.endswith(".tmp")]


def read_records(path: str) -> tuple[list[bytes], int]:
    """(the framed bytes of each intact record, how many bytes after them are torn or corrupt)."""
    with open(path, "rb") as f:
        blob = f.read()
    records, at = [], 0
    for start, end in _record_spans(blob):
        records.append(blob[start:end])
        at = end
    return records, len(blob) - at


def _record_spans(blob: bytes) -> Iterator[tuple[int, int]]:
    at = 0
    while at + 12 <= len(blob):
        header = blob[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", blob[at + 8:at + 12])[0] != masked_crc32c(header):
            return
        data_end = at + 12 + length
        if data_end + 4 > len(blob):
            return
        if struct.unpack("<I", blob[data_end:data_end + 4])[0] != masked_crc32c(blob[at + 12:data_end]):
            return
        yield at, data_end + 4
        at = data_end + 4


def parse_event(record: bytes) -> Event:
    """The `Event` proto inside one framed record."""
    return Event.FromString(record[12:-4])


def drop_events_after(directory: str, step: int) -> int:
    """Rewrites the event files in `directory` without events whose step is past `step`; returns how many
    events were dropped. File-version headers are kept whatever their step: readers need them."""
    dropped = 0
    for path in event_files(directory):
        records, torn_bytes = read_records(path)
        kept = []
        for record in records:
            event = parse_event(record)
            if event.step <= step or event.HasField("file_version"):
                kept.append(record)
        if torn_bytes:
            logging.warning("dropping %d bytes of a torn or corrupt record at the end of %s", torn_bytes, path)
        if len(kept) == len(records) and not torn_bytes:
            continue
        dropped += len(records) - len(kept)
        with atomic_write(path, "wb") as f:
            f.writelines(kept)
    return dropped
