"""The RL update on 8 simulated CPU devices equals the update on one device.

jax reads XLA_FLAGS once, at import, so the 8-device run happens in a
subprocess (multidevice_check.py); the rest of the suite keeps one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 1e-5  # relative, float32: the SFT step's (tests/training/test_multidevice.py)


def test_rl_update_on_meshes_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "tests.rl.multidevice_check"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out["meshes"]) == {"(8, 1, 1)", "(2, 2, 2)", "(1, 4, 2)"}
    # The comparison means something: some tokens clip and the policy has moved from the base.
    assert all(0 < c < 0.5 for c in out["clip_frac"][1:]) and all(k > 0 for k in out["kl"][1:]), out
    for mesh, diff in out["meshes"].items():
        assert set(diff) == {"loss", "step_loss", "grads", "kl", "entropy", "clip_frac"}, diff
        assert all(value <= TOLERANCE for value in diff.values()), (mesh, diff)
