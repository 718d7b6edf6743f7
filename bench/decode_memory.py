"""What the sampler's decode program holds: its compiled memory and every copy of the whole KV cache in it.

The decode program (sampling/programs.py) takes the cache, donated, and returns it updated in place, so at
its peak it should hold one cache plus the weights and small temporaries. A cache kept in another layout
than the one the loop reads makes XLA copy the whole cache into the loop's layout on entry and back on exit
(a `copy` or `transpose` of a cache-sized array in the optimised HLO) and hold it twice.

`watch_decode_program(sampler)` wraps a Sampler's decode program so that its first call also compiles it
once more for inspection and records `decode_memory_report(compiled, cache)`. bench/bench_generate.py
prints it with --memory-report.
"""

from __future__ import annotations

import math
import re

import jax

# One HLO instruction: `%name = dtype[dims]{layout} opcode(`; a computation's header: `%name (` or `ENTRY %name (`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\](\{[^}]*\})?\s+([\w\-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_COPY_OPCODES = ("copy", "transpose")


def cache_copies(hlo_text: str, cache_elements: int, dtype: str) -> list[dict]:
    """Every `copy` or `transpose` in `hlo_text` whose result has a whole cache array's element count and
    dtype ('bf16', 'f32', ...): {computation, name, opcode, shape}."""
    found, computation = [], None
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m is None:
            header = _COMPUTATION.match(line)
            if header is not None and "=" not in line:
                computation = header.group(1)
            continue
        name, elem_type, dims, layout, opcode = m.groups()
        if opcode not in _COPY_OPCODES or elem_type != dtype:
            continue
        shape = [int(d) for d in dims.split(",") if d]
        if math.prod(shape) == cache_elements:
            found.append(dict(computation=computation, name=name, opcode=opcode,
                              shape=f"{elem_type}[{dims}]{layout or ''}"))
    return found


_HLO_DTYPES = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}


def decode_memory_report(compiled, cache) -> dict:
    """The compiled decode program's memory (GiB) beside its cache's, and the whole-cache copies in its HLO."""
    arrays = [x for x in jax.tree.leaves(cache) if x.ndim == 5]  # keys and values [l, b, ., ., h]
    cache_bytes = sum(x.nbytes for x in arrays)
    stats = compiled.memory_analysis()
    gib = 2 ** -30
    report = {"cache_gib": cache_bytes * gib, "cache_shape": list(arrays[0].shape)}
    for field in ("argument", "output", "alias", "temp"):
        value = getattr(stats, f"{field}_size_in_bytes", None) if stats is not None else None
        report[f"{field}_gib"] = None if value is None else value * gib
    dtype = _HLO_DTYPES.get(str(arrays[0].dtype), str(arrays[0].dtype))
    report["cache_copies"] = cache_copies(compiled.as_text(), arrays[0].size, dtype)
    return report


def watch_decode_program(sampler) -> dict:
    """Wraps `sampler.decode_program`; the returned dict fills with decode_memory_report at the first call."""
    program, report = sampler.decode_program, {}

    def watched(state, ds, *args, **kwargs):
        if not report:
            report.update(decode_memory_report(program.lower(state, ds, *args, **kwargs).compile(), ds.cache))
        return program(state, ds, *args, **kwargs)

    sampler.decode_program = watched
    return report
