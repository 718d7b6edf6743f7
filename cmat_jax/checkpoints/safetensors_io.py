"""Reading and writing safetensors files with numpy memory maps.

A small reader of our own (rather than safetensors' numpy loader) because it
reads bfloat16 through ml_dtypes, maps tensors lazily so a large checkpoint is
never in host memory at once, and can say precisely which file is truncated.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from cmat_jax.fileio import atomic_write, write_json_atomic

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, malformed or does not fit the model."""


def _check_header(path: str, header) -> None:
    """A header is {name: {dtype, shape, data_offsets}} plus optional __metadata__."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file: its header is a {type(header).__name__}, "
                              "not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("dtype"), str)):
            raise CheckpointError(f"{path} has a corrupt safetensors header: tensor {name!r} needs dtype, shape "
                                  f"and data_offsets [begin, end], found {entry!r}")


class SafetensorsFile:
    """Lazy view of one .safetensors file: `names`, `shape(name)`, `read(name)`."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise CheckpointError(
                    f"{path} is truncated or not a safetensors file: header claims {header_len} bytes, "
                    f"file has {size}"
                )
            try:
                header = json.loads(f.read(header_len))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path} has a corrupt safetensors header: {e}") from None
        _check_header(path, header)
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        self._data_start = 8 + header_len
        data_end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if self._data_start + data_end > size:
            raise CheckpointError(
                f"{path} is truncated: its tensors need {self._data_start + data_end} bytes, the file has {size}; "
                "re-copy or re-download it"
            )
        self._mmap = None

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only numpy view into the mapped file."""
        entry = self._entries[name]
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = entry["data_offsets"]
        raw = self._mmap[self._data_start + begin: self._data_start + end]
        dtype = DTYPES[entry["dtype"]]
        expected = int(np.prod(entry["shape"], dtype=np.int64)) * dtype.itemsize
        if raw.size != expected:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has {raw.size} bytes, expected {expected} for shape {entry['shape']}"
            )
        return raw.view(dtype).reshape(entry["shape"])


class SafetensorsDir:
    """All tensors of a Hugging Face model directory (one file or an index + shards)."""

    def __init__(self, model_dir: str):
        index_path = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.isfile(index_path):
            try:
                with open(index_path, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index_path} is not a valid safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        elif os.path.isfile(single):
            files, weight_map = ["model.safetensors"], None
        else:
            found = sorted(f for f in os.listdir(model_dir) if f.endswith((".bin", ".pt", ".safetensors")))
            raise CheckpointError(
                f"{model_dir} has neither model.safetensors nor model.safetensors.index.json"
                + (f" (found {', '.join(found)}; convert .bin weights to safetensors first)" if found else "")
            )
        self._files: dict[str, SafetensorsFile] = {}
        for name in files:
            path = os.path.join(model_dir, name)
            if not os.path.isfile(path):
                raise CheckpointError(f"{index_path} lists {name}, which is missing from {model_dir}")
            self._files[name] = SafetensorsFile(path)
        self._where: dict[str, SafetensorsFile] = {}
        for file in self._files.values():
            for tensor in file.names:
                self._where[tensor] = file
        if weight_map is not None:
            for tensor, fname in weight_map.items():
                if tensor not in self._where:
                    raise CheckpointError(f"{index_path} maps {tensor!r} to {fname}, which does not contain it")

    @property
    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def file_of(self, name: str) -> str:
        return self._where[name].path

    def shape(self, name: str) -> tuple[int, ...]:
        return self._where[name].shape(name)

    def read(self, name: str) -> np.ndarray:
        return self._where[name].read(name)


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Writes `tensors` to `path` atomically (temporary file, then rename)."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    arrays = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in DTYPE_NAMES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        header[name] = {"dtype": DTYPE_NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes
    with atomic_write(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())


def write_sharded(out_dir: str, tensors: Iterable[tuple[str, np.ndarray]], max_shard_bytes: int,
                  prefix: str = "model") -> list[str]:
    """Writes tensors into `prefix.safetensors`, or into numbered shards plus an
    index when they exceed `max_shard_bytes`. Tensors are consumed lazily and one
    shard's worth is held in memory at a time. Returns the file names written."""
    parts: list[tuple[str, list[str]]] = []  # (temporary file name, tensor names)
    current: dict[str, np.ndarray] = {}
    current_bytes = total = 0

    def flush():
        name = f"{prefix}.part{len(parts):05d}.safetensors"
        write_safetensors(os.path.join(out_dir, name), current)
        parts.append((name, list(current)))
        current.clear()

    for name, arr in tensors:
        if current and current_bytes + arr.nbytes > max_shard_bytes:
            flush()
            current_bytes = 0
        current[name] = arr
        current_bytes += arr.nbytes
        total += arr.nbytes
    if current or not parts:
        flush()

    # Final names only once every part is complete, so a crash leaves no
    # half-written model under the names transformers looks for. Weights of an
    # earlier export to this directory go first: loaders prefer a lone
    # `model.safetensors` (transformers) or an index (SafetensorsDir) over the
    # other form, and would read stale weights.
    _remove_earlier_weights(out_dir, prefix)
    if len(parts) == 1:
        final = f"{prefix}.safetensors"
        os.replace(os.path.join(out_dir, parts[0][0]), os.path.join(out_dir, final))
        return [final]
    weight_map, finals = {}, []
    for i, (part_name, names) in enumerate(parts):
        final = f"{prefix}-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        os.replace(os.path.join(out_dir, part_name), os.path.join(out_dir, final))
        finals.append(final)
        weight_map.update({t: final for t in names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    index_path = os.path.join(out_dir, f"{prefix}.safetensors.index.json")
    write_json_atomic(index_path, index, indent=2, sort_keys=True)
    return finals


def _remove_earlier_weights(out_dir: str, prefix: str) -> None:
    shard = re.compile(re.escape(prefix) + r"-\d{5}-of-\d{5}\.safetensors")
    for name in os.listdir(out_dir):
        if name in (f"{prefix}.safetensors", f"{prefix}.safetensors.index.json") or shard.fullmatch(name):
            os.remove(os.path.join(out_dir, name))
