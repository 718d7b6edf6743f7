"""The run state: per-role adapters on one frozen base, frozen roles, sampling weights, and
checkpoints with several roles and host items (and the single-adapter layout of older runs), and resuming
a run whose config predates a setting."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from cmat_jax.settings.run import parse_run
from cmat_jax.training.checkpoint import Checkpointer
from cmat_jax.training.run_state import RunState, make_checkpointer
from tests.training.common import tiny_config

ROLES = ("assistant", "checker", "reflection")


def _batch(rows=8, t=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 1024, (rows, t)).astype(np.int32)
    return {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "loss_mask": np.ones((rows, t), np.float32),
            "segment_ids": np.ones((rows, t), np.int32), "positions": np.tile(np.arange(t, dtype=np.int32), (rows, 1))}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


def _logits(state, role, tokens):
    graphdef, weights = state.sampling_weights(role)
    return np.asarray(nnx.merge(graphdef, weights)(jnp.asarray(tokens))[0])


def test_roles_update_apart_on_one_base_and_checkpoint_with_host_items(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{"lora.rank": 4})
    state = RunState(parse_run(config), roles=ROLES, frozen_roles=("reflection",),
                     checkpointer=make_checkpointer(config, config.workdir))
    assert set(state.opt_states) == {"assistant", "checker"} and state.trained_roles == ("assistant", "checker")
    with pytest.raises(ValueError, match="role 'reflection' is frozen"):
        state.update("reflection", None, None, 0)
    with pytest.raises(KeyError, match="role 'user' has no adapters"):
        state.sampling_weights("user")

    tokens = _batch()["tokens"][:2]
    base = _logits(state, "checker", tokens)
    before = {role: _leaves(state.adapters[role]) for role in ROLES}
    step_fn = state.make_step()
    batch = state.put_batch(_batch())
    metrics = state.update("assistant", step_fn, batch, 0)
    assert bool(metrics["finite"])
    metrics = state.update("assistant", step_fn, batch, 1)  # B moves away from 0 after the first update
    assert not _equal(state.adapters["assistant"], before["assistant"])
    for role in ("checker", "reflection"):  # untouched, and not donated with the assistant's buffers
        assert _equal(state.adapters[role], before[role])
    assert not np.allclose(_logits(state, "assistant", tokens), base)
    np.testing.assert_array_equal(_logits(state, "checker", tokens), base)
    state.update("checker", step_fn, batch, 0)
    assert not _equal(state.adapters["checker"], before["checker"])

    host = {"iteration": 3, "memory": {"task-1": ["Trial 1: check the column names."]}, "rng": [1, 2]}
    state.save(7, host, force=True)
    state.checkpointer.wait()
    assert state.checkpointer.saved_roles(7) == (list(ROLES), ["assistant", "checker"])

    config.resume = True
    fresh = RunState(parse_run(config), roles=ROLES, frozen_roles=("reflection",),
                     checkpointer=make_checkpointer(config, config.workdir))
    assert _equal(fresh.adapters["checker"], before["checker"])  # fresh adapters before the restore
    assert fresh.restore(7) == host
    for role in ROLES:
        assert _equal(fresh.adapters[role], state.adapters[role]), role
    for role in ("assistant", "checker"):
        assert _equal(fresh.opt_states[role], state.opt_states[role]), role
    leaf = jax.tree.leaves(fresh.adapters["checker"])[0]
    assert leaf.sharding.is_equivalent_to(jax.tree.leaves(fresh.lora_shardings)[0], leaf.ndim)
    only = fresh.checkpointer.restore_adapters(7, fresh.adapters["checker"], fresh.lora_shardings, role="checker")
    assert _equal(only, state.adapters["checker"])

    # A run with a role the checkpoint lacks is refused with the roles named.
    more = RunState(parse_run(config), roles=ROLES + ("judge",),
                    checkpointer=make_checkpointer(config, config.workdir))
    with pytest.raises(ValueError, match=r"holds adapters of roles \['assistant', 'checker', 'reflection'\]; "
                                         r"this run also needs \['judge'\]"):
        more.restore(7)
    for s in (state, fresh, more):
        s.checkpointer.close()


def test_single_adapter_checkpoints_still_restore(tmp_path):
    """The layout SFT runs wrote before roles existed: items lora/, opt_state/, data/."""
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{"lora.rank": 4})
    state = RunState(parse_run(config))
    state.update("assistant", state.make_step(), state.put_batch(_batch()), 0)
    lora, opt_state = state.adapters["assistant"], state.opt_states["assistant"]
    data = {"epoch": 0, "index": 5, "fingerprint": "x"}
    directory = str(tmp_path / "run" / "checkpoints")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
    manager.save(4, args=ocp.args.Composite(lora=ocp.args.StandardSave(nnx.to_pure_dict(lora)),
                                            opt_state=ocp.args.StandardSave(opt_state),
                                            data=ocp.args.JsonSave(data)))
    manager.wait_until_finished()
    manager.close()

    restored = RunState(parse_run(config), checkpointer=Checkpointer(directory, every=1, keep=5))
    assert restored.checkpointer.saved_roles(4) == (["assistant"], ["assistant"])
    assert restored.restore(4) == {"data": data}
    assert _equal(restored.adapters["assistant"], lora) and _equal(restored.opt_states["assistant"], opt_state)
    only = restored.checkpointer.restore_adapters(4, restored.adapters["assistant"], restored.lora_shardings)
    assert _equal(only, lora)
    restored.checkpointer.close()


def test_role_settings_are_checked(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"))
    with pytest.raises(ValueError, match="distinct"):
        RunState(parse_run(config), roles=("assistant", "assistant"))
    with pytest.raises(ValueError, match=r"frozen roles \['checker'\] are not among the roles"):
        RunState(parse_run(config), roles=("assistant",), frozen_roles=("checker",))
    with pytest.raises(ValueError, match="lower-case letters"):
        RunState(parse_run(config), roles=("Assistant/1",))


def test_a_setting_added_after_a_run_started_resumes_at_its_default():
    from cmat_jax.training.config import cmat_config
    from cmat_jax.training.run_state import config_differences
    from cmat_jax.training.workdir import default_settings

    current = json.loads(cmat_config().to_json())
    saved = json.loads(cmat_config().to_json())
    del saved["train"]["recovery_fraction"]  # a workdir written before the setting existed
    assert config_differences(saved, current, defaults=default_settings("cmat")) == []
    current["train"]["recovery_fraction"] = 0.5  # a new value would change the run: refused
    assert config_differences(saved, current, defaults=default_settings("cmat")) == [
        "train.recovery_fraction: saved None, now 0.5"]
    assert config_differences(saved, json.loads(cmat_config().to_json())) != []  # without defaults: a change
