"""Sharded training on 8 simulated CPU devices equals training on one device.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a
subprocess (multidevice_check.py); the rest of the suite keeps one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-5  # relative, float32


def test_meshes_match_one_device_and_restore_moves_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "tests.training.multidevice_check"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out["meshes"]) == {"(8, 1, 1)", "(2, 2, 2)", "(1, 4, 2)"}
    for mesh, diff in out["meshes"].items():
        assert diff["loss"] <= TOLERANCE and diff["grads"] <= TOLERANCE, (mesh, diff)
    restore = out["restore"]
    assert restore["restored_at"] == 4 and restore["steps_after_restore"] == 2
    assert restore["sharding_matches"]
    assert restore["loss"] <= TOLERANCE, restore
