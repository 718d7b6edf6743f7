"""The checkout's config files (configs/<name>.py), loaded as modules the way the CLIs load them."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_module(name: str):
    """configs/<name>.py as a module (its get_config() builds the config)."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
