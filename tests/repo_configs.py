"""The checkout's config files (configs/<name>.py), loaded as modules the way the CLIs load them; a CMAT
config run to its end."""

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str):
    """configs/<name>.py as a module (its get_config() builds the config)."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cmat(config):
    """Runs a CMAT config to its end: (the closed CmatRun, the records of its metrics.jsonl)."""
    from cmat_jax.rl.loop import CmatRun
    from cmat_jax.settings.run import parse_run

    run = CmatRun(parse_run(config))
    try:
        run.run()
    finally:
        run.close()
    with open(os.path.join(config.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return run, [json.loads(line) for line in f]
