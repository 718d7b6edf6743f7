"""Advantage estimators against hand-computed values; masking of groups without signal; refusals."""

from __future__ import annotations

import numpy as np
import pytest

from cmat_jax.rl.advantages import ADVANTAGES, make_advantage


def test_grpo_matches_hand_values_and_masks_equal_groups():
    rewards = [1, 0, 1, 1, 0, 1, -1, 0, 0]
    groups = ["a", "b", "a", "a", "b", "c", "b", "a", "c"]
    out = make_advantage("grpo", eps=1e-6)(rewards, groups)
    # a: [1, 1, 1, 0] mean 0.75, std sqrt(0.1875); b: [0, 0, -1] mean -1/3, std sqrt(2/9); c: [1, 0]
    sa, sb, sc = np.sqrt(0.1875) + 1e-6, np.sqrt(2 / 9) + 1e-6, 0.5 + 1e-6
    expected = [0.25 / sa, (1 / 3) / sb, 0.25 / sa, 0.25 / sa, (1 / 3) / sb, 0.5 / sc, (-2 / 3) / sb, -0.75 / sa,
                -0.5 / sc]
    np.testing.assert_allclose(out.advantages, expected, rtol=1e-6)
    assert out.advantages.dtype == np.float32 and not out.masked.any() and out.zero_adv_frac == 0.0

    out = make_advantage("grpo")([1, 1, 0, 2, 0.5, 0.5], [("assistant", 1)] * 2 + [("assistant", 2)] * 2
                                 + [("checker", 1)] * 2)
    np.testing.assert_array_equal(out.masked, [True, True, False, False, True, True])
    np.testing.assert_array_equal(out.advantages[out.masked], 0.0)
    assert out.groups == 3 and out.zero_adv_frac == pytest.approx(2 / 3)
    assert out.report() == {"zero_adv_frac": pytest.approx(2 / 3), "groups": 3.0}


def test_rloo_is_the_leave_one_out_baseline():
    out = make_advantage("rloo")([1, 0, 0, 1, 3, 3, 2], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(out.advantages, [1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3, 3 - 2.5, 3 - 2.5, 2 - 3],
                               rtol=1e-6)
    out = make_advantage("rloo")([0, 0, 1, 0], [7, 7, 8, 8])
    np.testing.assert_array_equal(out.masked, [True, True, False, False])
    np.testing.assert_allclose(out.advantages, [0, 0, 1, -1])
    once = make_advantage("rloo")([0, 0, 1, 0], iter([7, 7, 8, 8]))  # group ids read once (any iterable)
    np.testing.assert_array_equal(once.advantages, out.advantages)


def test_reinforce_running_baseline_survives_state_and_restore():
    est = make_advantage("reinforce", decay=0.5)
    first = est([1.0, 0.0, 0.0, 0.0], [0, 0, 1, 1])  # baseline starts at the first batch's mean, 0.25
    np.testing.assert_allclose(first.advantages, [0.75, -0.25, -0.25, -0.25])
    assert not first.masked.any() and first.zero_adv_frac == 0.0  # equal rewards in group 1: still signal
    saved = est.state()
    assert saved == {"baseline": 0.25, "decay": 0.5}
    second = est([1.0, 1.0], ["x", "x"])  # baseline 0.25; then 0.5 * 0.25 + 0.5 * 1 = 0.625
    np.testing.assert_allclose(second.advantages, [0.75, 0.75])
    np.testing.assert_allclose(est([0.0], ["y"]).advantages, [-0.625])  # one sample per group is fine here

    resumed = make_advantage("reinforce", decay=0.5)
    resumed.restore(saved)
    np.testing.assert_array_equal(resumed([1.0, 1.0], ["x", "x"]).advantages, second.advantages)
    with pytest.raises(ValueError, match="decay"):
        make_advantage("reinforce", decay=0.9).restore(saved)


def test_refusals():
    with pytest.raises(ValueError, match="rl.advantage is 'gae'; choose from grpo, rloo, reinforce"):
        make_advantage("gae")
    for name in ("grpo", "rloo"):
        with pytest.raises(ValueError, match=f"rollout.group_size must be >= 2 for {name} \\(found 1\\)"):
            make_advantage(name, group_size=1)
        with pytest.raises(ValueError, match=f"rollout.group_size must be >= 2 for {name}: group 'b' has 1 sample"):
            make_advantage(name)([1, 0, 1], ["a", "a", "b"])
        masked = make_advantage(name, singletons="mask")([1, 0, 1], ["a", "a", "b"])
        np.testing.assert_array_equal(masked.masked, [False, False, True])
    make_advantage("reinforce", group_size=1)  # no group baseline needed
    with pytest.raises(ValueError, match="3 rewards but 2 group ids"):
        make_advantage("grpo")([1, 0, 1], [0, 0])
    with pytest.raises(ValueError, match="non-finite"):
        make_advantage("grpo")([1, np.nan], [0, 0])
    assert set(ADVANTAGES) == {"grpo", "rloo", "reinforce"}


def test_positive_only_zeroes_negative_advantages_and_keeps_every_token():
    from cmat_jax.agents.trajectory import CORRECT, WRONG, Trajectory, Turn
    from cmat_jax.rl.episodes import training_segments

    def trajectory(sample, status):
        turn = Turn(role="assistant", segment=0, prompt_ids=[1, 2, 3], completion_ids=[4 + sample, 9],
                    completion_logprobs=[-0.5, -0.1], finish_reason="eos", text="")
        return Trajectory("t", "select", 0, sample, 0, turns=[turn], status=status, reward=float(status == CORRECT))

    # One group: rewards [1, 0, 0, 0] -> grpo advantages [+1.73, -0.58, -0.58, -0.58].
    trajectories = [trajectory(0, CORRECT)] + [trajectory(s, WRONG) for s in (1, 2, 3)]
    plain, report = training_segments(trajectories, "assistant", -1.0, make_advantage("grpo"))
    positive, positive_report = training_segments(trajectories, "assistant", -1.0, make_advantage("grpo"),
                                                  positive_only=True)
    assert report == positive_report and len(plain) == len(positive) == 4
    for p, q in zip(plain, positive):
        np.testing.assert_array_equal(p.ids, q.ids)
        np.testing.assert_array_equal(p.loss_mask, q.loss_mask)  # the failed samples' tokens stay in the mean
        np.testing.assert_array_equal(q.advantages, np.maximum(p.advantages, 0.0))
    assert plain[0].advantages[3] == pytest.approx(np.sqrt(3), rel=1e-5) and plain[1].advantages[3] < 0
    assert positive[1].advantages.max() == 0.0

    # reinforced_only: the samples left at advantage 0 are not packed at all (nor counted in the token mean).
    reinforced, reinforced_report = training_segments(trajectories, "assistant", -1.0, make_advantage("grpo"),
                                                      positive_only=True, reinforced_only=True)
    assert reinforced_report == report and len(reinforced) == 1
    np.testing.assert_array_equal(reinforced[0].advantages, positive[0].advantages)
    both_signs, _ = training_segments(trajectories, "assistant", -1.0, make_advantage("grpo"), reinforced_only=True)
    assert len(both_signs) == 4  # every sample of an unmasked group has a nonzero grpo advantage
