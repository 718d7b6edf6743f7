"""The `distributed` settings: when to start several processes, and one-line refusals of what cannot work."""

import os

import jax
import pytest

from cmat_jax import distributed
from cmat_jax.training.config import cmat_config, default_config


def settings(**fields):
    s = default_config().distributed
    for key, value in fields.items():
        s[key] = value
    return s


def resolve(environ=None, tpu=False, **fields):
    return distributed.resolve(settings(**fields), environ=environ or {}, tpu_present=lambda: tpu)


def test_both_configs_have_the_section_and_a_plain_run_stays_one_process():
    assert cmat_config().distributed.to_dict() == default_config().distributed.to_dict()
    assert resolve() is None
    assert distributed.initialize(settings(), environ={}, tpu_present=lambda: False) is False
    assert resolve(initialize="off", environ={"JAX_COORDINATOR_ADDRESS": "h:1", "CMAT_NUM_PROCESSES": "2",
                                               "CMAT_PROCESS_ID": "0"}) is None


def test_explicit_settings_and_the_environment():
    setup = resolve(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3)
    assert (setup.coordinator_address, setup.num_processes, setup.process_id) == ("10.0.0.2:8476", 4, 3)
    # tools/tpu_vm.py local passes them in the environment; explicit fields win.
    env = {"JAX_COORDINATOR_ADDRESS": "localhost:1234", "CMAT_NUM_PROCESSES": "2", "CMAT_PROCESS_ID": "1"}
    assert resolve(env) == distributed.Setup("localhost:1234", 2, 1, 300)
    assert resolve(env, process_id=0).process_id == 0
    # On a TPU VM 'auto' starts it and leaves the rest to jax's detection.
    assert resolve(tpu=True) == distributed.Setup(None, None, None, 300)
    assert resolve(initialize="on") == distributed.Setup(None, None, None, 300)


@pytest.mark.parametrize("fields, environ, message", [
    ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"}, {},
     "distributed.process_id is 2 but distributed.num_processes is 2; ids run from 0 to 1"),
    ({"num_processes": 2, "process_id": 0}, {}, "no coordinator address is given; set distributed.coordinator_address"),
    ({"num_processes": 2}, {}, "distributed.num_processes is set but distributed.process_id is not"),
    ({"process_id": 1, "coordinator_address": "h:1"}, {},
     "distributed.process_id is set but distributed.num_processes"),
    ({"initialize": "yes"}, {}, "distributed.initialize is 'yes'; choose from auto, on, off"),
    ({"coordinator_address": "localhost"}, {}, "expected host:port of process 0"),
    ({"num_processes": -3}, {}, "expected >= 1"),
    ({}, {"CMAT_NUM_PROCESSES": "two"}, r"\$CMAT_NUM_PROCESSES is 'two'; expected an integer"),
    ({"initialization_timeout_s": 0}, {}, "initialization_timeout_s must be >= 1"),
])
def test_bad_settings_are_one_line_errors(fields, environ, message):
    with pytest.raises(ValueError, match=message) as error:
        resolve(environ, **fields)
    assert "\n" not in str(error.value)


def test_a_global_batch_must_split_evenly_over_processes(monkeypatch):
    distributed.check_process_share(8, "data.batch_size")
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    with pytest.raises(ValueError, match=r"data.batch_size \(8\) must be a multiple of the process count \(3\)"):
        distributed.check_process_share(8, "data.batch_size")


def test_one_process_helpers_are_the_single_process_behaviour():
    assert distributed.on_main(lambda: [1, "a"]) == [1, "a"]
    with pytest.raises(FileExistsError, match="x"):
        distributed.on_main(lambda: (_ for _ in ()).throw(FileExistsError("x")))
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.any_process(True) and not distributed.any_process(False)
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    assert distributed.process_rows(sharding, 6) == (0, 1, 2, 3, 4, 5)


def test_checkpoint_paths_keep_uris():
    from cmat_jax.training.checkpoint import checkpoint_path

    assert checkpoint_path("gs://bucket/run/ckpts") == "gs://bucket/run/ckpts"
    assert checkpoint_path("rel/dir") == os.path.abspath("rel/dir")
