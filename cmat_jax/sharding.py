"""Device mesh and logical-axis sharding rules.

This is the only module that names mesh axes. Parameters carry logical axis
names in their `axes` metadata (e.g. ('embed', 'mlp')); activations are
constrained with `constrain(x, ('batch', 'seq', 'act_embed'))`. One rules table
maps logical names to mesh axes. A dimension that the mapped mesh axes do not
divide evenly is replicated instead (over the axes that do not divide it), so
tiny test models run on any mesh; this is explicit, not silent:
`replicated_dimensions` lists every such dimension of a state, and
`state_shardings` logs them once as a warning, since on a real model it means
memory that was meant to be split is held whole on every device.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis, tuple of mesh axes, or None (replicated)
DEFAULT_RULES: dict[str, object] = {
    # parameters
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    "lora_rank": None,
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    "cache_seq": None,
}


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Optional[Sequence] = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh; one size may be -1 to take the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))} must be positive or -1")
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"mesh sizes {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are not a multiple of {known}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes))} need {math.prod(sizes)} devices, "
            f"but {len(devices)} are available; set one size to -1 to fill the rest"
        )
    if len(devices) == len(jax.devices()):
        # All devices: let JAX order them by the physical topology (TPU slices, multi-host).
        grid = mesh_utils.create_device_mesh(sizes, devices=devices)
    else:
        grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def _mesh_axes_for(name: Optional[str], rules: dict) -> tuple[str, ...]:
    if name is None:
        return ()
    if name not in rules:
        raise KeyError(f"logical axis {name!r} has no sharding rule; known: {', '.join(sorted(rules))}")
    target = rules[name]
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


class Replicated(NamedTuple):
    """A dimension left whole over mesh axes its rule names, because they do not divide it."""

    dim: int  # index of the dimension in the array's shape
    axis: str  # its logical axis name
    size: int  # its length
    mesh_axes: tuple[str, ...]  # the rule's mesh axes dropped for it (their sizes do not divide `size`)

    def describe(self, mesh: Mesh) -> str:
        sizes = "x".join(f"{a}={mesh.shape[a]}" for a in self.mesh_axes)
        return f"dim {self.dim} ({self.axis}={self.size}) not split over {sizes}"


def _resolve(axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
             rules: Optional[dict]) -> tuple[PartitionSpec, list[Replicated]]:
    rules = DEFAULT_RULES if rules is None else rules
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match an array of shape {tuple(shape)}")
    used: set[str] = set()
    spec, replicated = [], []
    for index, (name, dim) in enumerate(zip(axes, shape)):
        mesh_axes = [a for a in _mesh_axes_for(name, rules) if mesh.shape[a] > 1 and a not in used]
        dropped = []
        while mesh_axes and dim % math.prod(mesh.shape[a] for a in mesh_axes):
            dropped.insert(0, mesh_axes.pop())
        if dropped:
            replicated.append(Replicated(index, name, dim, tuple(dropped)))
        used.update(mesh_axes)
        spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes))
    return PartitionSpec(*spec), replicated


def logical_to_spec(axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                    rules: Optional[dict] = None) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dimensions are named `axes`.

    Mesh axes of size 1 and axes already used by an earlier dimension are
    dropped; so are mesh axes that do not divide the dimension, last first
    (`replicated_axes` lists those).
    """
    return _resolve(axes, shape, mesh, rules)[0]


def replicated_axes(axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                    rules: Optional[dict] = None) -> list[Replicated]:
    """The dimensions `logical_to_spec` leaves unsplit over mesh axes that do not divide them."""
    return _resolve(axes, shape, mesh, rules)[1]


def named_sharding(axes, shape, mesh: Mesh, rules: Optional[dict] = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


# ---------------------------------------------------------------------------
# Activation constraints: active only inside `activation_sharding(mesh)`.

_ACTIVE: list[tuple[Mesh, dict]] = []


@contextlib.contextmanager
def activation_sharding(mesh: Optional[Mesh], rules: Optional[dict] = None) -> Iterator[None]:
    """Within this context (at trace time), `constrain` pins activations to `mesh`."""
    if mesh is None:
        yield
        return
    _ACTIVE.append((mesh, DEFAULT_RULES if rules is None else rules))
    try:
        yield
    finally:
        _ACTIVE.pop()


def constrain(x: jax.Array, axes: Sequence[Optional[str]]) -> jax.Array:
    """Sharding constraint by logical axis names; a no-op outside `activation_sharding`."""
    if not _ACTIVE:
        return x
    mesh, rules = _ACTIVE[-1]
    return jax.lax.with_sharding_constraint(x, named_sharding(axes, x.shape, mesh, rules))


def _variables_with_axes(state) -> Iterator[tuple[str, object]]:
    from flax import nnx

    leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, var in leaves:
        if isinstance(var, nnx.Variable) and var.get_metadata().get("axes") is not None:
            yield jax.tree_util.keystr(path, simple=True, separator="."), var


def replicated_dimensions(abstract_state, mesh: Mesh, rules: Optional[dict] = None) -> list[str]:
    """One line per variable dimension of `abstract_state` that `mesh` cannot split as the rules ask."""
    lines = []
    for path, var in _variables_with_axes(abstract_state):
        for item in replicated_axes(var.get_metadata()["axes"], var.shape, mesh, rules):
            lines.append(f"{path} {tuple(var.shape)}: {item.describe(mesh)}")
    return lines


_WARNED: set[str] = set()  # one warning per distinct finding per process (optimizer states repeat the adapters')


def state_shardings(abstract_state, mesh: Mesh, rules: Optional[dict] = None):
    """NamedShardings for an nnx State whose Variables carry `axes` metadata.

    Variables without `axes` (e.g. counters) are replicated. Dimensions the
    mesh does not divide are replicated too, and logged (see
    `replicated_dimensions`).
    """
    from flax import nnx

    found = [line for line in replicated_dimensions(abstract_state, mesh, rules) if line not in _WARNED]
    if found:
        _WARNED.update(found)
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        logging.warning("sharding: %d variable dimensions are replicated because the mesh %s does not divide "
                        "them: %s", len(found), dict(mesh.shape), shown)

    def one(var):
        if not isinstance(var, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        axes = var.get_metadata().get("axes")
        shape = var.shape
        if axes is None:
            spec = PartitionSpec()
        else:
            spec = logical_to_spec(axes, shape, mesh, rules)
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_shards(mesh: Mesh, rules: Optional[dict] = None) -> int:
    """How many pieces batch_sharding cuts the batch into."""
    return math.prod(mesh.shape[a] for a in _mesh_axes_for("batch", DEFAULT_RULES if rules is None else rules))


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Optional[dict] = None) -> NamedSharding:
    """Sharding of a [batch, ...] input array: batch over ('data', 'fsdp')."""
    axes = _mesh_axes_for("batch", DEFAULT_RULES if rules is None else rules)
    axes = tuple(a for a in axes if mesh.shape[a] > 1)
    first = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))
