"""The SamplerConfig a run builds: a module's Sampler is replaced by one that stops the run with its config."""

import pytest


class SamplerBuilt(Exception):
    """Raised where a Sampler would be built; args[0] is its SamplerConfig."""


def sampler_config_of(monkeypatch, module, start):
    """Runs `start()` with `module.Sampler` replaced, and returns the config of the first Sampler it builds."""

    def stop(model, config, mesh=None):
        raise SamplerBuilt(config)

    monkeypatch.setattr(module, "Sampler", stop)
    with pytest.raises(SamplerBuilt) as built:
        start()
    return built.value.args[0]
