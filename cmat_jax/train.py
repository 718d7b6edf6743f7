"""Training from a config file: LoRA SFT (mode 'sft') or the CMAT loop (mode 'cmat').

    python -m cmat_jax.train --config configs/cmat_tiny.py        # SFT warm start, then CMAT iterations
    python -m cmat_jax.train --config configs/sft_tiny.py --config.train.steps=100
    python -m cmat_jax.train --config configs/sft_qwen2_5_1_5b.py --config.model.hf_dir=/models/Qwen2.5-1.5B-Instruct
    python -m cmat_jax.train --config configs/sft_tiny.py --config.resume=true   # continue a killed run
    python tools/tpu_vm.py local --num-processes 2 -- python -m cmat_jax.train --config configs/sft_tiny.py

On a TPU slice of several hosts (or with the `distributed` settings) every host runs the same
command and the processes start JAX's multi-controller runtime first (cmat_jax/distributed.py).
"""

import logging as std_logging

from absl import app, flags, logging

from cmat_jax import cli, distributed
from cmat_jax.settings.run import RunSettings, parse_run
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


class _OrbaxWarningsOnly(std_logging.Filter):
    """orbax logs every step of every save at INFO, which buries the progress bar."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_OrbaxWarningsOnly())
    config = FLAGS.config
    try:
        settings = parse_run(config)  # every setting, before anything is built
        distributed.initialize(config.distributed)  # before anything touches a device
        driver = start(settings)
    except (ValueError, OSError) as e:  # config, data, model or workdir problems: the message says what to fix
        raise SystemExit(f"error: {e}") from None
    try:
        if settings.mode == "cmat":
            driver.run()
        else:
            history = driver.train()
    finally:
        driver.close()
    if settings.mode == "cmat":
        logging.info("finished at iteration %d; workdir %s", driver.iteration, driver.workdir)
    elif history:
        logging.info("finished at step %d, loss %.4f; workdir %s", driver.step, history[-1]["loss"], driver.workdir)
    else:
        logging.info("nothing to do: the run in %s is already at step %d of train.steps=%d", driver.workdir,
                     driver.step, settings.train.steps)


def start(settings: RunSettings):
    """The run's driver: the SFT trainer (mode 'sft') or the CMAT loop (mode 'cmat'), started or resumed."""
    if settings.mode == "cmat":
        from cmat_jax.rl.loop import CmatRun

        return CmatRun(settings)
    from cmat_jax.training.trainer import Trainer

    return Trainer(settings)


if __name__ == "__main__":
    cli.run(main)
