"""Training from a config file: LoRA SFT (mode 'sft') or the CMAT loop (mode 'cmat').

    python -m cmat_jax.train --config configs/cmat_tiny.py        # SFT warm start, then CMAT iterations
    python -m cmat_jax.train --config configs/sft_tiny.py --config.train.steps=100
    python -m cmat_jax.train --config configs/sft_qwen2_5_1_5b.py --config.model.hf_dir=/models/Qwen2.5-1.5B-Instruct
    python -m cmat_jax.train --config configs/sft_tiny.py --config.resume=true   # continue a killed run
    python tools/tpu_vm.py local --num-processes 2 -- python -m cmat_jax.train --config configs/sft_tiny.py

On a TPU slice of several hosts (or with the `distributed` settings) every host runs the same
command and the processes start JAX's multi-controller runtime first (cmat_jax/distributed.py).

How a run stops, in one line on stderr (docs/training.md, "When a run stops"): SIGINT or SIGTERM
lets the step in flight finish, waits for a checkpoint being written, says where to resume from
and exits with status 130 or 143 (a second signal stops at once); a full disk or a read-only file
system names the path and exits with status 1; a setting, data or workdir problem says what to
fix and exits with status 1.
"""

import logging as std_logging
import os
from typing import Optional

from absl import app, flags, logging

from cmat_jax import cli, distributed, interrupts
from cmat_jax.fileio import disk_error, disk_error_text
from cmat_jax.settings.run import RunSettings, parse_run
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


class _OrbaxWarningsOnly(std_logging.Filter):
    """orbax logs every step of every save at INFO, which buries the progress bar; and a full disk as one
    traceback per thread of a save, which the run's own error line replaces."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "orbax" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        return record.levelno >= std_logging.WARNING and disk_error_text(record.getMessage()) is None and \
            (error is None or disk_error(error) is None)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_OrbaxWarningsOnly())
    interrupts.between_steps()  # SIGINT and SIGTERM end the step in flight, then stop the run
    config = FLAGS.config
    try:
        settings = parse_run(config)  # every setting, before anything is built
        distributed.initialize(config.distributed)  # before anything touches a device
        driver = start(settings)
    except (ValueError, OSError) as e:  # config, data, model or workdir problems: the message says what to fix
        if disk_error(e):
            raise
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


def describe_stop(error: BaseException) -> Optional[str]:
    """The line a run stopped by a signal or a full or read-only disk ends with, saying where to resume from
    (cli.run's `describe`); None before the config is parsed."""
    try:
        config = FLAGS.config
    except flags.Error:
        return None
    from cmat_jax.training.checkpoint import checkpoint_directory, checkpoint_path
    from cmat_jax.training.workdir import resume_hint

    workdir = os.path.abspath(config.workdir)
    hint = resume_hint(config, workdir)
    if isinstance(error, interrupts.Interrupted):
        return f"{error.name}: stopped between steps. {hint}"
    found = disk_error(error)
    directory = checkpoint_path(checkpoint_directory(config, workdir))
    inside = found.path is not None and (found.path + "/").startswith(directory.rstrip("/") + "/")
    where = f"the checkpoint directory {directory}" if inside else \
        found.path or "the workdir or the checkpoint directory"
    fix = "make it writable" if found.code == "EROFS" else "free space there"
    return (f"error: {found.what} ({found.code}) writing {where}; {fix}, or point --config.workdir or "
            f"--config.checkpoint.directory at another disk. {hint}")


if __name__ == "__main__":
    cli.run(main, describe=describe_stop)
