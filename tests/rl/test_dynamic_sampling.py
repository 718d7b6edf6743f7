"""Informative groups: the frontier curriculum (rollout.curriculum_frontier, rollout.curriculum_window)."""

import dataclasses
import json

import numpy as np
import pytest

from cmat_jax.agents.user import User
from tests import test_settings
from tests.rl.test_cmat_loop import small_config
from tests.test_settings import refusal

nothing_is_built = test_settings.nothing_is_built  # the fixture: refusals come before the model is built


@dataclasses.dataclass(frozen=True)
class FakeTask:
    task_id: str


def pool(n=6):
    return [FakeTask(f"t{i}") for i in range(n)]


def test_the_frontier_curriculum_favours_pass_rates_near_one_half():
    user = User(pool(), seed=0, boost=3.0, frontier=True, window=2)
    assert np.allclose(user.weights(), 1 / 6)  # nothing played: every task is on the frontier
    user.record("t0", [True, False])  # 0.5
    user.record("t1", [True, True, True, False])  # 0.75
    user.record("t2", [True, True])  # 1.0
    user.record("t3", [False, False])  # 0.0
    w = user.weights() / user.weights()[2]
    assert np.allclose(w, [3.0, 2.0, 1.0, 1.0, 3.0, 3.0])
    # The pass rate is the mean of the last two groups: t2 at 1.0 then 0.0 is on the frontier again.
    user.record("t2", [False, False])
    assert user.pass_rate("t2") == 0.5 and user.pass_rate("t5") is None
    user.record("t2", [False, False])
    assert user.pass_rate("t2") == 0.0  # the first group has left the window
    # The default curriculum boosts mixed outcomes; its window of 1 is the last group alone.
    mixed = User(pool(), seed=0, boost=3.0)
    mixed.record("t0", [True, True, True, False])
    mixed.record("t1", [True, False])
    mixed.record("t1", [True, True])
    assert np.allclose(mixed.weights() / mixed.weights()[1], [3.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_a_draw_leaves_out_the_excluded_tasks():
    user = User(pool(), seed=3)
    assert {t.task_id for t in user.draw(4, exclude={"t0", "t1", "t2"})} == {"t3", "t4", "t5"}
    assert user.draw(2, exclude={t.task_id for t in pool()}) == []
    # Without an exclusion the draw is the one it always was.
    assert [t.task_id for t in User(pool(), seed=3).draw(3)] == [t.task_id for t in User(pool(), seed=3).draw(3, ())]


def test_the_curriculum_state_is_json_and_restores_the_draws():
    user = User(pool(), seed=1, frontier=True, window=3)
    for outcomes in ([True, False], [True, True], [False, True]):
        user.record("t0", outcomes)
    user.record("t4", [False, False])
    saved = json.loads(json.dumps(user.state()))
    assert saved["recent"] == {"t0": [0.5, 1.0, 0.5], "t4": [0.0]}
    expected = [t.task_id for t in user.draw(4)]
    again = User(pool(), seed=9, frontier=True, window=3)
    again.restore(saved)
    assert [t.task_id for t in again.draw(4)] == expected
    # A checkpoint written before the window (one rate per task, under "success") restores too.
    old = User(pool(), seed=1)
    old.restore({"rng": saved["rng"], "success": {"t0": 0.5}})
    assert old.pass_rate("t0") == 0.5
    with pytest.raises(ValueError, match="cannot restore the User's curriculum state"):
        old.restore({"rng": saved["rng"], "recent": {"t0": 0.5}})
    with pytest.raises(ValueError, match="curriculum window must be an integer >= 1"):
        User(pool(), seed=0, window=0)


@pytest.mark.parametrize("overrides, message", [
    ({"rollout.curriculum": False, "rollout.curriculum_frontier": True},
     "rollout.curriculum_frontier is true but rollout.curriculum is false"),
    ({"rollout.curriculum": False, "rollout.curriculum_window": 4},
     "rollout.curriculum_window is 4 but rollout.curriculum is false"),
])
def test_bad_informative_group_settings_are_refused_naming_the_field(tmp_path, nothing_is_built, overrides,
                                                                    message):
    assert message in refusal(small_config(tmp_path / "w", **overrides))
    assert not (tmp_path / "w").exists()
