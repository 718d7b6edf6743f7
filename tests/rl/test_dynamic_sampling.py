"""Informative groups: dynamic sampling (rl.groups_per_update, rl.max_sampling_rounds) and the frontier
curriculum (rollout.curriculum_frontier, rollout.curriculum_window), at toy scale."""

import dataclasses
import json
import zlib

import numpy as np
import pytest

from cmat_jax.agents.user import User
from cmat_jax.rl.dynamic_sampling import play_rounds
from cmat_jax.rl.loop import without_timings
from tests import test_settings
from tests.rl.test_cmat_loop import read_metrics, run, small_config
from tests.test_settings import refusal

nothing_is_built = test_settings.nothing_is_built  # the fixture: refusals come before the model is built


@dataclasses.dataclass(frozen=True)
class FakeTask:
    task_id: str


@dataclasses.dataclass(frozen=True)
class FakeTrajectory:
    task_id: str


def fake_rounds(pool_size, informative_ids, **settings):
    """play_rounds over a pool of `pool_size` tasks drawn in order; (the result, the rounds' task ids)."""
    pool = [FakeTask(f"t{i}") for i in range(pool_size)]
    rounds = []

    def draw(count, exclude):
        return [t for t in pool if t.task_id not in exclude][:count]

    def play(tasks):
        rounds.append([t.task_id for t in tasks])
        return [FakeTrajectory(t.task_id) for t in tasks for _ in range(2)]

    informative = lambda played: {t.task_id for t in played if t.task_id in informative_ids}  # noqa: E731
    return play_rounds(draw, play, informative, **settings), rounds


def test_dynamic_sampling_refills_to_the_asked_count_and_drops_the_rest():
    # t1, t3, t4 and t6 carry signal; 3 groups asked, rounds of 2 tasks.
    result, rounds = fake_rounds(10, {"t1", "t3", "t4", "t6"}, tasks_per_round=2, groups_per_update=3, max_rounds=5)
    assert rounds == [["t0", "t1"], ["t2", "t3"], ["t4", "t5"]]  # stops once 3 are in hand
    assert sorted({t.task_id for t in result.kept}) == ["t1", "t3", "t4"] and len(result.kept) == 6
    assert len(result.trajectories) == 12 and [t.task_id for t in result.tasks] == sum(rounds, [])
    assert result.report == {"sampling_rounds": 3.0, "tasks_played": 6.0, "groups_dropped": 3.0,
                             "groups_surplus": 0.0}
    # Informative groups past the asked count are left out too: the update keeps its size.
    result, _ = fake_rounds(10, {"t0", "t1", "t2"}, tasks_per_round=4, groups_per_update=2, max_rounds=5)
    assert sorted({t.task_id for t in result.kept}) == ["t0", "t1"]
    assert result.report == {"sampling_rounds": 1.0, "tasks_played": 4.0, "groups_dropped": 1.0,
                             "groups_surplus": 1.0}


def test_dynamic_sampling_stops_at_its_bound_or_when_the_pool_is_spent():
    result, rounds = fake_rounds(10, {"t9"}, tasks_per_round=2, groups_per_update=2, max_rounds=3)
    assert len(rounds) == 3 and result.kept == []
    assert result.report == {"sampling_rounds": 3.0, "tasks_played": 6.0, "groups_dropped": 6.0,
                             "groups_surplus": 0.0}
    result, rounds = fake_rounds(5, {"t4"}, tasks_per_round=2, groups_per_update=2, max_rounds=9)
    assert rounds == [["t0", "t1"], ["t2", "t3"], ["t4"]] and {t.task_id for t in result.kept} == {"t4"}
    assert result.report["sampling_rounds"] == 3.0 and result.report["groups_dropped"] == 4.0


def test_dynamic_sampling_off_is_one_round_with_every_trajectory():
    result, rounds = fake_rounds(10, set(), tasks_per_round=3, groups_per_update=0, max_rounds=0)
    assert rounds == [["t0", "t1", "t2"]] and result.kept == result.trajectories and result.report == {}


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
    ({"rl.groups_per_update": 2}, "rl.groups_per_update is 2 but rl.max_sampling_rounds is 0"),
    ({"rl.max_sampling_rounds": 3}, "rl.max_sampling_rounds is 3 but rl.groups_per_update is 0"),
    ({"rl.groups_per_update": 2, "rl.max_sampling_rounds": 2, "rl.advantage": "reinforce"},
     "rl.groups_per_update is 2 but rl.advantage is 'reinforce'"),
    ({"rl.groups_per_update": 5, "rl.max_sampling_rounds": 2},
     "rl.max_sampling_rounds x rollout.tasks_per_iteration = 2 x 2 tasks give at most 4 groups; expected "
     "rl.groups_per_update <= 4"),
    ({"rollout.curriculum": False, "rollout.curriculum_frontier": True},
     "rollout.curriculum_frontier is true but rollout.curriculum is false"),
    ({"rollout.curriculum": False, "rollout.curriculum_window": 4},
     "rollout.curriculum_window is 4 but rollout.curriculum is false"),
])
def test_bad_informative_group_settings_are_refused_naming_the_field(tmp_path, nothing_is_built, overrides,
                                                                    message):
    assert message in refusal(small_config(tmp_path / "w", **overrides))
    assert not (tmp_path / "w").exists()


def informative(task_id: str) -> bool:
    """The tasks whose samples this test's reward tells apart."""
    return zlib.crc32(task_id.encode()) % 2 == 1


@pytest.fixture
def mixed_rewards(monkeypatch):
    """Half the tasks' groups carry signal (sample 0 earns 1, the others 0), the other half's are all 0: the
    random tiny model fails every task alike, so its own rewards would leave no group informative."""
    from cmat_jax.rl import episodes

    monkeypatch.setattr(episodes, "assistant_reward",
                        lambda t, penalty: float(t.sample == 0 and informative(t.task_id)))


@pytest.fixture
def played(monkeypatch):
    """The task ids of every rollout round, per call of the training engine."""
    from cmat_jax.agents.engine import RolloutEngine

    rounds = []
    real = RolloutEngine.run

    def spy(self, tasks, **kwargs):
        if kwargs.get("group_size", 1) > 1:  # the training engine (evaluations play one sample)
            rounds.append([t.task_id for t in tasks])
        return real(self, tasks, **kwargs)

    monkeypatch.setattr(RolloutEngine, "run", spy)
    return rounds


DYNAMIC = {"rl.groups_per_update": 2, "rl.max_sampling_rounds": 3, "rollout.curriculum_frontier": True,
           "rollout.curriculum_window": 2, "train.steps": 1}


def test_the_loop_trains_on_the_refilled_groups_and_resumes_to_the_same_records(tmp_path, mixed_rewards, played,
                                                                              monkeypatch):
    from cmat_jax.rl import loop

    trained = []
    real = loop.episode_lib.training_segments

    def spy(trajectories, *args, **kwargs):
        trained.append(sorted({t.task_id for t in trajectories}))
        return real(trajectories, *args, **kwargs)

    monkeypatch.setattr(loop.episode_lib, "training_segments", spy)
    whole = tmp_path / "whole"
    run(small_config(whole, **{**DYNAMIC, "rl.iterations": 3}))
    records = read_metrics(whole)
    check_rounds([r for r in records if r["phase"] == "rl"], played, trained)

    # Stopped after one iteration and resumed: the same rounds, drawn by the restored curriculum.
    parts = tmp_path / "parts"
    run(small_config(parts, **{**DYNAMIC, "rl.iterations": 1}))
    resumed = small_config(parts, **{**DYNAMIC, "rl.iterations": 3})
    resumed.resume = True
    run(resumed)
    assert without_timings(read_metrics(parts)) == without_timings(records)


def check_rounds(records, played, trained):
    """Each iteration refilled until 2 informative groups were in hand (or 3 rounds were played) and trained on
    those 2; its record says what was played and dropped."""
    start = 0
    for record, kept in zip(records, trained):
        rounds = played[start:start + int(record["sampling_rounds"])]
        start += len(rounds)
        tasks = sum(rounds, [])
        signal = [t for t in tasks if informative(t)]
        assert len(set(tasks)) == len(tasks)  # no task twice in one iteration
        assert 1 <= len(rounds) <= 3 and all(len(r) == 2 for r in rounds)
        assert len(signal) >= 2 or len(rounds) == 3
        assert len([t for t in sum(rounds[:-1], []) if informative(t)]) < 2  # and stopped once they were
        assert kept == sorted(signal[:2])
        assert (record["tasks_played"], record["groups_dropped"], record["groups_surplus"]) == (
            len(tasks), len(tasks) - len(signal), max(len(signal) - 2, 0))
        assert record["groups"] == len(kept) and record["zero_adv_frac"] == 0.0
        assert record["zero_adv_frac_before"] == pytest.approx(1 - len(signal) / len(tasks))
    assert start == len(played) and any(r["sampling_rounds"] > 1 for r in records)
