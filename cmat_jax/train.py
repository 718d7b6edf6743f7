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
        distributed.initialize(config.distributed)  # before anything touches a device
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if config.get("mode", "sft") == "cmat":
        return _run_cmat(config)
    from cmat_jax.training.trainer import Trainer

    try:
        trainer = Trainer(config)
    except (ValueError, OSError) as e:  # config, data, model or workdir problems: the message says what to fix
        raise SystemExit(f"error: {e}") from None
    try:
        history = trainer.train()
    finally:
        trainer.close()
    if history:
        logging.info("finished at step %d, loss %.4f; workdir %s", trainer.step, history[-1]["loss"], trainer.workdir)
    else:
        logging.info("nothing to do: the run in %s is already at step %d of train.steps=%d", trainer.workdir,
                     trainer.step, config.train.steps)


def _run_cmat(config):
    from cmat_jax.rl.loop import CmatRun

    try:
        run = CmatRun(config)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        run.run()
    finally:
        run.close()
    logging.info("finished at iteration %d; workdir %s", run.iteration, run.workdir)


if __name__ == "__main__":
    cli.run(main)
