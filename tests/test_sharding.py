"""cmat_jax.sharding: the rules table, logical axes -> PartitionSpec (replication of dimensions a mesh does
not divide included), state_shardings on a model, batch shardings, and make_mesh on 8 simulated devices.

Specs are computed on AbstractMeshes, which need no devices; make_mesh runs in a child process started
with 8 CPU devices (XLA fixes the device count at import)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cmat_jax import sharding
from cmat_jax.models.config import preset
from cmat_jax.models.lora import LoRAConfig
from cmat_jax.models.transformer import Transformer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mesh(data=1, fsdp=1, tensor=1) -> AbstractMesh:
    return AbstractMesh((data, fsdp, tensor), sharding.MESH_AXES)


def _abstract_state(cfg, lora=None):
    model = nnx.eval_shape(lambda: Transformer(cfg, lora=lora, rngs=nnx.Rngs(0)))
    return nnx.state(model)


def _activation_axes_in_code() -> set[str]:
    """Logical axis names written in `constrain(x, (...))` calls anywhere in the package."""
    names = set()
    for path in Path(REPO, "cmat_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == \
                    "constrain" and len(node.args) > 1 and isinstance(node.args[1], ast.Tuple):
                names.update(e.value for e in node.args[1].elts if isinstance(e, ast.Constant) and e.value)
    return names


def test_the_rules_table_names_only_mesh_axes_and_covers_every_axis_in_use():
    for name, target in sharding.DEFAULT_RULES.items():
        targets = () if target is None else (target,) if isinstance(target, str) else target
        assert set(targets) <= set(sharding.MESH_AXES), (name, target)
    activations = _activation_axes_in_code()
    assert {"batch", "seq", "act_embed", "act_vocab"} <= activations  # the scan found the constrain calls
    assert activations <= set(sharding.DEFAULT_RULES), activations - set(sharding.DEFAULT_RULES)
    state = _abstract_state(preset("tiny"), LoRAConfig(rank=4))
    parameters = {axis for _, var in sharding._variables_with_axes(state) for axis in var.get_metadata()["axes"]}
    assert {"vocab", "embed", "q_heads", "kv_heads", "mlp", "layers", "norm", "lora_rank"} <= parameters
    assert parameters <= set(sharding.DEFAULT_RULES), parameters - set(sharding.DEFAULT_RULES)


def test_logical_axes_map_onto_the_mesh():
    m = mesh(data=2, fsdp=2, tensor=4)
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), m) == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("layers", "embed", "q_heads"), (2, 64, 64), m) == P(None, "fsdp", "tensor")
    assert sharding.logical_to_spec(("batch", "seq", "act_embed"), (8, 16, 64), m) == P(("data", "fsdp"), None, None)
    assert sharding.logical_to_spec(("lora_rank", None), (4, 7), m) == P(None, None)
    # Mesh axes of size 1 shard nothing, and are not a replication to report.
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh(tensor=4)) == P(None, "tensor")
    assert sharding.replicated_axes(("embed", "mlp"), (64, 128), mesh(tensor=4)) == []
    # A mesh axis serves one dimension only: the second dimension mapped to 'tensor' stays whole.
    assert sharding.logical_to_spec(("vocab", "mlp"), (64, 128), m) == P("tensor", None)


def test_dimensions_the_mesh_does_not_divide_are_replicated_and_reported():
    m = mesh(data=2, fsdp=4, tensor=8)
    assert sharding.logical_to_spec(("embed", "q_heads"), (64, 60), m) == P("fsdp", None)
    (item,) = sharding.replicated_axes(("embed", "q_heads"), (64, 60), m)
    assert item == sharding.Replicated(dim=1, axis="q_heads", size=60, mesh_axes=("tensor",))
    assert item.describe(m) == "dim 1 (q_heads=60) not split over tensor=8"
    # A batch of 6 splits over data=2 but not data x fsdp = 8: fsdp is dropped, data kept.
    assert sharding.logical_to_spec(("batch", "seq"), (6, 16), m) == P("data", None)
    assert sharding.replicated_axes(("batch", "seq"), (6, 16), m) == [
        sharding.Replicated(dim=0, axis="batch", size=6, mesh_axes=("fsdp",))]
    assert sharding.logical_to_spec(("batch", "seq"), (3, 16), m) == P(None, None)
    assert sharding.replicated_axes(("batch", "seq"), (3, 16), m)[0].mesh_axes == ("data", "fsdp")


def test_bad_axes_are_refused():
    with pytest.raises(ValueError, match=r"logical axes \('embed',\) do not match an array of shape \(4, 4\)"):
        sharding.logical_to_spec(("embed",), (4, 4), mesh())
    with pytest.raises(KeyError, match="logical axis 'heads' has no sharding rule"):
        sharding.logical_to_spec(("heads",), (4,), mesh())


def test_state_shardings_follow_the_axes_metadata_and_log_what_they_replicate(caplog):
    m = mesh(fsdp=2, tensor=8)
    cfg = preset("tiny").replace(num_heads=5, num_kv_heads=1, head_dim=12, intermediate_size=128)
    state = _abstract_state(cfg, LoRAConfig(rank=4))
    with caplog.at_level("WARNING"):
        shardings = sharding.state_shardings(state, m)
    spec = {path: var.get_value().spec for path, var in sharding._variables_with_axes(shardings)}
    assert spec["embed.table"] == P("tensor", "fsdp")
    assert spec["blocks.mlp.up.kernel"] == P(None, "fsdp", "tensor")
    assert spec["blocks.attn.q.kernel"] == P(None, "fsdp", None)  # 5 heads x 12 = 60 columns, tensor=8
    assert spec["blocks.attn.q.lora_a"] == P(None, "fsdp", None)
    assert all(isinstance(var.get_value(), NamedSharding) for _, var in sharding._variables_with_axes(shardings))

    lines = sharding.replicated_dimensions(state, m)
    assert "blocks.attn.q.kernel (2, 64, 60): dim 2 (q_heads=60) not split over tensor=8" in lines
    assert "blocks.attn.k.kernel (2, 64, 12): dim 2 (kv_heads=12) not split over tensor=8" in lines
    assert not any(".mlp." in line or "embed.table" in line for line in lines)  # those divide
    warnings = [r.getMessage() for r in caplog.records if "sharding:" in r.getMessage()]
    assert len(warnings) == 1 and f"{len(lines)} variable dimensions are replicated" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING"):
        sharding.state_shardings(state, m)  # the same findings again (e.g. the optimizer's copy): no repeat
    assert not [r for r in caplog.records if "sharding:" in r.getMessage()]


def test_a_model_whose_sizes_divide_replicates_nothing():
    assert sharding.replicated_dimensions(_abstract_state(preset("tiny"), LoRAConfig(rank=4)),
                                          mesh(data=2, fsdp=2, tensor=2)) == []


def test_batch_sharding_splits_the_batch_over_data_and_fsdp():
    m = mesh(data=2, fsdp=4, tensor=2)
    assert sharding.batch_sharding(m, 3).spec == P(("data", "fsdp"), None, None)
    assert sharding.batch_shards(m) == 8
    assert sharding.batch_sharding(mesh(fsdp=4), 2).spec == P("fsdp", None)
    assert sharding.batch_sharding(mesh(), 2).spec == P(None, None)


def test_constrain_is_a_no_op_outside_activation_sharding():
    x = jax.numpy.ones((4, 4))
    assert sharding.constrain(x, ("batch", "act_embed")) is x
    with sharding.activation_sharding(None):
        assert sharding.constrain(x, ("batch", "act_embed")) is x


def test_make_mesh_on_one_device_and_its_refusals():
    assert dict(sharding.make_mesh().shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match=r"need 2 devices, but 1 are available"):
        sharding.make_mesh(2, 1, 1)
    with pytest.raises(ValueError, match="at most one may be -1"):
        sharding.make_mesh(-1, -1, 1)
    with pytest.raises(ValueError, match="must be positive or -1"):
        sharding.make_mesh(0, -1, 1)


CHILD = """
import json, jax
from cmat_jax.sharding import make_mesh
assert jax.device_count() == 8
out = {}
for sizes in [(2, -1, 2), (1, -1, 1), (-1, 2, 1), (2, 2, 2)]:
    out[str(sizes)] = dict(make_mesh(*sizes).shape)
sub = make_mesh(1, -1, 2, devices=jax.devices()[4:])
out["subset_ids"] = [d.id for d in sub.devices.flat]
out["subset_shape"] = dict(sub.shape)
for bad in [(3, -1, 1), (4, 4, 1)]:
    try:
        make_mesh(*bad)
    except ValueError as e:
        out[str(bad)] = str(e)
print(json.dumps(out))
"""


def test_make_mesh_fills_and_orders_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["(2, -1, 2)"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert out["(1, -1, 1)"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert out["(-1, 2, 1)"] == {"data": 4, "fsdp": 2, "tensor": 1}
    assert out["(2, 2, 2)"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert out["subset_ids"] == [4, 5, 6, 7] and out["subset_shape"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert "8 devices are not a multiple of 3" in out["(3, -1, 1)"]
    assert "need 16 devices, but 8 are available" in out["(4, 4, 1)"]
