"""checkpoint.directory puts a run's checkpoints elsewhere (a bucket or shared storage for several hosts);
resume and export find them there."""

import os

from cmat_jax.training.checkpoint import checkpoint_path
from cmat_jax.training.trainer import Trainer
from cmat_jax.training.workdir import load_trained_model, saved_roles
from tests.training.common import KilledAt, tiny_config


def test_checkpoints_in_their_own_directory_resume_and_export(tmp_path):
    elsewhere = str(tmp_path / "shared" / "ckpts")
    workdir = str(tmp_path / "run")
    settings = {"train.steps": 4, "checkpoint.every": 2, "checkpoint.directory": elsewhere,
                "checkpoint.async_save": False}
    killed = Trainer(tiny_config(workdir, str(tmp_path / "data"), **settings))
    killed.batches = KilledAt(killed.batches, 3)
    try:
        killed.train()
    except KeyboardInterrupt:
        pass
    killed.close()
    assert os.listdir(elsewhere) == ["2"] and not os.path.exists(os.path.join(workdir, "checkpoints"))

    resumed = Trainer(tiny_config(workdir, str(tmp_path / "data"), resume=True, **settings))
    assert resumed.step == 2
    assert [h for h in resumed.train()] and resumed.step == 4
    resumed.close()
    assert sorted(os.listdir(elsewhere)) == ["2", "4"]

    assert saved_roles(workdir) == ["assistant"]
    assert load_trained_model(workdir)[2] == 4
    assert checkpoint_path("gs://bucket/run/ckpts") == "gs://bucket/run/ckpts"
    assert checkpoint_path("rel/dir") == os.path.abspath("rel/dir")
