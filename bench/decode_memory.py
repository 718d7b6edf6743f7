"""What the sampler's programs hold: each one's compiled memory and every copy of the whole KV cache in it.

The decode program (sampling/programs.py) takes the cache, donated, and returns it updated in place, so at
its peak it should hold one cache plus the weights and small temporaries. A cache kept in another layout
than the one a loop reads makes XLA copy the whole cache into the loop's layout on entry and back on exit
(a `copy` or `transpose` of a cache-sized array in the optimised HLO) and hold it twice.

`watch_programs(sampler)` wraps the Sampler's decode program and the module's prefill and slot programs so
that the first call of each at a new shape also compiles it once more for inspection and records
`program_report(compiled)` (printed to stderr as it is made, so a run that then fails still shows it).
bench/bench_generate.py prints them with --memory-report; bench/bench_iteration.py always records them.
"""

from __future__ import annotations

import math
import re
import sys

import jax

from cmat_jax.sampling import programs

# One HLO instruction: `%name = dtype[dims]{layout} opcode(`; a computation's header: `%name (` or `ENTRY %name (`.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\](\{[^}]*\})?\s+([\w\-]+)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\{\s*$")  # unindented, ends with "{"
_FIVE_D = re.compile(r"\b(\w+)\[(\d+(?:,\d+){4})\]")  # the cache's [l, b, s, k, h] among a program's shapes
_COPY_OPCODES = ("copy", "transpose")
_BYTES = {"bf16": 2, "f16": 2, "f32": 4}
WATCHED = ("prefill", "shared_prefill", "append", "begin", "resize", "repack")  # beside the decode program


def cache_copies(hlo_text: str, cache_shape: list[int], dtype: str) -> list[dict]:
    """Every relayout of a whole cache array in `hlo_text`: a `transpose`, or a `copy` into another layout
    than its operand's, whose result is the cache's dims in any order, of its dtype ('bf16', 'f32', ...):
    {computation, name, opcode, shape}. (A copy in the same layout, such as a second zero-filled cache made
    from the first's broadcast, is not one.)"""
    found, computation, shapes = [], None, {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m is None:
            header = _COMPUTATION.match(line)
            if header is not None:
                computation = header.group(1)
            continue
        name, elem_type, dims, layout, opcode = m.groups()
        shape = f"{elem_type}[{dims}]{layout or ''}"
        shapes[name] = shape
        if opcode not in _COPY_OPCODES or elem_type != dtype:
            continue
        operand = line[m.end():].split(")", 1)[0].split(",")[0].strip().lstrip("%")
        if opcode == "copy" and shapes.get(operand) == shape:
            continue
        if sorted(int(d) for d in dims.split(",") if d) == sorted(cache_shape):
            found.append(dict(computation=computation, name=name, opcode=opcode, shape=shape))
    return found


def program_report(compiled) -> dict:
    """A compiled program's memory (GiB) beside its KV cache's (the largest 5-D array among its parameters and
    results, keys and values counted), and the whole-cache copies in its optimised HLO."""
    text = compiled.as_text()
    header = text.split("\n", 1)[0]  # HloModule ..., entry_computation_layout={(params)->(results)}
    shapes = [(t, [int(d) for d in dims.split(",")]) for t, dims in _FIVE_D.findall(header)]
    dtype, cache_shape = max(shapes, key=lambda s: math.prod(s[1]), default=("", []))
    elements = math.prod(cache_shape) if cache_shape else 0
    gib = 2 ** -30
    report = {"cache_shape": cache_shape, "cache_gib": 2 * elements * _BYTES.get(dtype, 0) * gib}
    stats = compiled.memory_analysis()
    for field in ("argument", "output", "alias", "temp"):
        value = getattr(stats, f"{field}_size_in_bytes", None) if stats is not None else None
        report[f"{field}_gib"] = None if value is None else value * gib
    report["cache_copies"] = cache_copies(text, cache_shape, dtype) if elements else []
    return report


def describe(name: str, r: dict) -> str:
    gib = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"{name} (cache {r['cache_shape']}, K and V {gib(r['cache_gib'])} GiB): arguments "
             f"{gib(r['argument_gib'])}, outputs {gib(r['output_gib'])}, aliased {gib(r['alias_gib'])}, "
             f"temporaries {gib(r['temp_gib'])} GiB; whole-cache copies in the optimised HLO: "
             f"{len(r['cache_copies'])}"]
    lines += [f"  {c['opcode']} {c['shape']} in {c['computation']}" for c in r["cache_copies"]]
    return "\n".join(lines)


def _signature(args, kwargs) -> tuple:
    leaves = jax.tree.leaves((args, {k: v for k, v in kwargs.items() if k != "spec"}))
    return tuple((getattr(x, "shape", None), str(getattr(x, "dtype", x))) for x in leaves)


def watch_programs(sampler) -> list[dict]:
    """Wraps the sampler's decode program and programs.WATCHED (module-wide, for this process: a later call
    replaces an earlier call's wrappers); the returned list gains {program, **program_report} at each
    program's first call of each new shape."""
    reports, seen = [], set()

    def watch(name, program):
        program = getattr(program, "watched_program", program)
        def watched(*args, **kwargs):
            key = (name, _signature(args, kwargs))
            if key not in seen:
                seen.add(key)
                report = dict(program=name, **program_report(program.lower(*args, **kwargs).compile()))
                reports.append(report)
                print(describe(name, report), file=sys.stderr, flush=True)
            return program(*args, **kwargs)

        watched.watched_program = program
        return watched

    sampler.decode_program = watch("decode", sampler.decode_program)
    for name in WATCHED:
        setattr(programs, name, watch(name, getattr(programs, name)))
    return reports
