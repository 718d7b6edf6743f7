"""The batched rollout engine: exact records, memory, the Checker role, batching independence."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.memory import MEMORY_HEADER, ReflectionMemory
from cmat_jax.agents.replies import ModelReplies, Reply, ReplySource, ScriptedReplies
from cmat_jax.agents.trajectory import CHECKER_ROLE, REFLECTION_ROLE, Trajectory
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.data.tokenizer import decode_ids, end_of_turn_ids, render_chat, tokenize_text
from cmat_jax.demos.oracle import OracleAgent
from cmat_jax.envs.base import run_episode
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig, SqlEnvironments
from cmat_jax.models.config import preset
from cmat_jax.models.lora import LoRA, LoRAConfig
from cmat_jax.models.transformer import Transformer
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.sampler import Sampler, SamplerConfig
from tests.envs.sql_helpers import make_task

GREEDY = SamplingPolicy(max_new_tokens=24, temperature=0.0)


class TokenizedScript(ReplySource):
    """A scripted agent that answers like a model: its text's token ids plus the end-of-turn id."""

    def __init__(self, tokenizer, make_agent):
        self.tokenizer = tokenizer
        self.scripted = ScriptedReplies(make_agent)
        self.eos = end_of_turn_ids(tokenizer)[0]

    def __call__(self, weights, requests, settings):
        replies = self.scripted(weights, requests, settings)
        return [Reply(r.text, tokenize_text(self.tokenizer, r.text) + [self.eos],
                      [0.0] * (len(tokenize_text(self.tokenizer, r.text)) + 1), "eos") for r in replies]


class Fixed(ReplySource):
    """Replies with fixed texts, in order of the requests, as a model would (ids + end of turn)."""

    def __init__(self, tokenizer, text):
        self.tokenizer, self.text = tokenizer, text
        self.requests = []

    def __call__(self, weights, requests, settings):
        self.requests += list(requests)
        eos = end_of_turn_ids(self.tokenizer)[0]
        out = []
        for r in requests:
            text = self.text(r) if callable(self.text) else self.text
            ids = tokenize_text(self.tokenizer, text) + [eos]
            out.append(Reply(text, ids, [0.0] * len(ids), "eos"))
        return out


def conversation(trajectory: Trajectory, opening):
    """The conversation a trajectory's assistant turns and observations make, after the opening."""
    messages = list(opening)
    for turn in trajectory.role_turns("assistant"):
        messages.append(Message(ASSISTANT, turn.text))
        if turn.observation is not None:
            messages.append(Message(USER, turn.observation))
    return messages


def test_oracle_through_the_engine_reproduces_run_episode(dev_tasks):
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(checker="off", assistant=GREEDY),
                           assistant=ScriptedReplies(OracleAgent))
    trajectories = engine.run(dev_tasks)
    env = SqlEnv(SqlEnvConfig(checker="off"))
    assert len(trajectories) == len(dev_tasks) == 60
    for task, trajectory in zip(dev_tasks, trajectories):
        episode = run_episode(env, OracleAgent(), task)
        assert conversation(trajectory, episode.messages[:3]) == episode.messages
        assert trajectory.final_info == episode.final_info
        assert trajectory.correct and trajectory.reward == 1.0
    # The static Checker approves every gold statement, so gating changes nothing for the oracle.
    static = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(checker="static", assistant=GREEDY),
                           assistant=ScriptedReplies(OracleAgent)).run(dev_tasks)
    assert [t.final_info for t in static] == [t.final_info for t in trajectories]


def test_every_prompt_extends_the_previous_prompt_and_completion(dev_tasks, tokenizer):
    mutations = [t for t in dev_tasks if t.is_mutation][:6]
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(checker="static", assistant=GREEDY),
                           assistant=TokenizedScript(tokenizer, OracleAgent), tokenizer=tokenizer)
    trajectories = engine.run(mutations, group_size=2)
    for trajectory in trajectories:
        turns = trajectory.role_turns("assistant")
        assert len(turns) == 2 and trajectory.correct
        opening = list(SqlEnv().reset(mutations[trajectory.group_id]))
        for previous, turn in zip(turns, turns[1:]):
            assert turn.segment == previous.segment == 0
            prefix = previous.prompt_ids + previous.completion_ids
            assert turn.prompt_ids[:len(prefix)] == prefix
        for index, turn in enumerate(turns):
            # Each prompt decodes to the chat template's rendering of the conversation so far.
            so_far = conversation(trajectory, opening)[:3 + 2 * index]
            assert decode_ids(tokenizer, turn.prompt_ids) == render_chat(tokenizer, so_far, True)


def test_reflections_are_written_after_failures_and_shown_capped(tokenizer):
    task = make_task(description="Who scored the most?", label=["adam"])
    wrong = Fixed(tokenizer, 'Action: Answer\nFinal Answer: ["Bob"]')
    reflections = iter(f"Reflection number {i}: check the Score column." for i in range(10))
    reflector = Fixed(tokenizer, lambda request: next(reflections))
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(assistant=GREEDY, trials=4),
                           assistant=wrong, tokenizer=tokenizer, reflector=reflector)
    memory = ReflectionMemory(omega=2)
    trajectories = engine.run([task], memory=memory)
    assert [t.trial for t in trajectories] == [0, 1, 2, 3]
    assert all(not t.correct for t in trajectories)
    written = [t.role_turns(REFLECTION_ROLE)[0].text for t in trajectories[:3]]
    assert written == [f"Reflection number {i}: check the Score column." for i in range(3)]
    assert trajectories[3].role_turns(REFLECTION_ROLE) == []  # the last trial writes none
    assert trajectories[0].memory_shown == []
    assert trajectories[3].memory_shown == written[1:]  # the last omega=2, oldest first
    prompt = decode_ids(tokenizer, trajectories[3].turns[0].prompt_ids)
    block = f"{MEMORY_HEADER}\nTrial 1:\n{written[1]}\nTrial 2:\n{written[2]}\n\n{task.prompt}"
    assert block in prompt and written[0] not in prompt
    # The reflection prompt shows the failed episode.
    assert 'Final Answer: ["Bob"]' in reflector.requests[0].messages[0].content
    # Memory is plain data: restored from JSON it renders the same block.
    restored = ReflectionMemory(omega=2)
    restored.restore(json.loads(json.dumps(memory.state())))
    assert restored.render(task.task_id) == memory.render(task.task_id) and len(restored) == 3


def test_reflection_prompts_too_long_for_the_sampler_drop_the_oldest_turns(tokenizer):
    task = make_task(description="Who scored the most?", label=["adam"])
    statement = "Action: Operation\n```sql\nSELECT * FROM People\n```"
    answer = 'Action: Answer\nFinal Answer: ["Bob"]'

    def run(max_len, reflection_tokens):
        assistant = Fixed(tokenizer, lambda r: statement if len(r.messages) == 3 else answer)
        reflector = Fixed(tokenizer, "Look at the Score column.")
        config = RolloutConfig(assistant=GREEDY, trials=2, checker="off",
                               reflection=SamplingPolicy(max_new_tokens=reflection_tokens, temperature=0.0))
        engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), config, assistant=assistant, tokenizer=tokenizer,
                               reflector=reflector, max_len=max_len)
        return engine.run([task], memory=ReflectionMemory(omega=2)), reflector

    free, reflector = run(None, 16)
    full = len(reflector.requests[0].prompt_ids)
    max_len = max(len(t.prompt_ids) for t in free[0].turns) + GREEDY.max_new_tokens  # every Assistant turn fits
    assert full < max_len
    trajectories, reflector = run(max_len, max_len - full + 1)  # the whole attempt is one token too long
    [request] = reflector.requests
    shown = request.messages[0].content
    assert len(request.prompt_ids) <= full - 1
    assert "SELECT * FROM People" not in shown and 'Final Answer: ["Bob"]' in shown  # the oldest turn went
    assert [turn.text for turn in trajectories[0].role_turns(REFLECTION_ROLE)] == ["Look at the Score column."]
    # No room for even the task: no reflection, and the retry still plays.
    trajectories, reflector = run(max_len, max_len - 8)
    assert reflector.requests == [] and [t.trial for t in trajectories] == [0, 1]
    assert trajectories[0].role_turns(REFLECTION_ROLE) == [] and trajectories[1].memory_shown == []


def test_a_learned_checker_rejection_stops_the_statement(tokenizer):
    task = make_task(description="Who scored the most?", label=["adam"])
    statement = "Action: Operation\n```sql\nSELECT Name FROM People ORDER BY Score DESC LIMIT 1\n```"
    assistant = Fixed(tokenizer, lambda r: statement if len(r.messages) == 3 else 'Action: Answer\nFinal Answer: ["adam"]')
    checker = Fixed(tokenizer, "Verdict: REJECT\nReason: sort by the Score column as a number.")
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(assistant=GREEDY, checker="learned"),
                           assistant=assistant, tokenizer=tokenizer, checker_model=checker)
    [trajectory] = engine.run([task])
    first = trajectory.role_turns("assistant")[0]
    assert first.info["executed"] is False and first.info["sql"].startswith("SELECT Name")
    assert first.observation == "The Checker rejected this statement: sort by the Score column as a number."
    assert first.verdict == {"source": "learned", "ok": False, "readable": True,
                             "reason": "sort by the Score column as a number."}
    [checker_turn] = trajectory.role_turns(CHECKER_ROLE)
    assert "SELECT Name FROM People" in decode_ids(tokenizer, checker_turn.prompt_ids)
    assert checker_turn.segment != first.segment
    assert trajectory.correct and trajectory.final_info["checker_rejections"] == 1
    assert checker_turn.reward == 0.0  # it rejected a statement of an episode that succeeded
    # The static Checker rejects an unknown column before the learned one is asked.
    bad = "Action: Operation\n```sql\nSELECT Nope FROM People\n```"
    checker.requests.clear()
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(assistant=GREEDY, checker="static+learned"),
                           assistant=Fixed(tokenizer, lambda r: bad if len(r.messages) == 3 else
                                           'Action: Answer\nFinal Answer: ["adam"]'),
                           tokenizer=tokenizer, checker_model=checker)
    [trajectory] = engine.run([task])
    first = trajectory.role_turns("assistant")[0]
    assert first.verdict["source"] == "static" and not first.verdict["ok"] and not first.info["executed"]
    assert checker.requests == []
    # A Checker prompt too long for the sampler is not sent: the statement runs unjudged.
    max_len = 1024
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(
        assistant=GREEDY, checker="learned", checker_sampling=SamplingPolicy(max_new_tokens=max_len - 8)),
        assistant=assistant, tokenizer=tokenizer, checker_model=checker, max_len=max_len)
    [trajectory] = engine.run([task])
    first = trajectory.role_turns("assistant")[0]
    assert checker.requests == [] and trajectory.role_turns(CHECKER_ROLE) == []
    assert first.info["executed"] is True and first.verdict is None and trajectory.correct


def test_prompts_over_the_budget_drop_old_observations_then_overflow(dev_tasks, tokenizer):
    task = next(t for t in dev_tasks if not t.is_mutation)
    statement = "Action: Operation\n```sql\nSELECT * FROM `" + task.table_name + "`\n```"
    run = lambda budget, rounds=4: RolloutEngine(  # noqa: E731
        SqlEnvironments(SqlEnvConfig(max_rounds=rounds)),
        RolloutConfig(assistant=GREEDY, checker="off", prompt_budget=budget),
        assistant=Fixed(tokenizer, statement), tokenizer=tokenizer).run([task])[0]
    free = run(None)
    lengths = [len(t.prompt_ids) for t in free.turns]
    assert free.dropped_observations == 0 and len(lengths) == 5 and lengths == sorted(lengths)
    budget = lengths[2] - 1  # the third prompt no longer fits as it is
    trajectory = run(budget)
    assert trajectory.dropped_observations > 0 and len(trajectory.turns) == 5
    assert all(len(t.prompt_ids) <= budget for t in trajectory.turns)
    assert len({t.segment for t in trajectory.turns}) > 1  # a rebuilt prompt starts a new segment
    overflow = run(lengths[0] - 1)
    assert overflow.status == "context_overflow" and overflow.turns == []


@pytest.fixture(scope="module")
def tiny():
    model = Transformer(preset("tiny"), lora=LoRAConfig(rank=4), attention_impl="xla", rngs=nnx.Rngs(3))
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x * 4.0 if x.ndim > 1 else x, state)  # sharper logits than the default init
    return nnx.merge(graphdef, state)


def sampled_engine(model, tokenizer, trials=1, max_batch=None):
    sampler = Sampler(model, SamplerConfig(max_len=1024, max_batch=max_batch))
    replies = ModelReplies(sampler, tokenizer)
    config = RolloutConfig(assistant=SamplingPolicy(max_new_tokens=12, temperature=1.0), trials=trials,
                           reflection=SamplingPolicy(max_new_tokens=8, temperature=1.0))
    return RolloutEngine(SqlEnvironments(SqlEnvConfig()), config, assistant=replies, tokenizer=tokenizer,
                         reflector=replies, max_len=1024)


def test_batched_episodes_equal_episodes_run_alone(dev_tasks, tokenizer, tiny):
    tasks = dev_tasks[:3]
    key = jax.random.key(11)
    together = sampled_engine(tiny, tokenizer, trials=2).run(tasks, group_size=2, key=key, weights={"assistant": tiny})
    alone = []
    for task in tasks:
        alone += sampled_engine(tiny, tokenizer, trials=2, max_batch=1).run(
            [task], group_size=2, key=key, weights={"assistant": tiny})
    order = lambda ts: sorted(ts, key=lambda t: (t.trial, t.task_id, t.sample))  # noqa: E731
    for a, b in zip(order(together), order(alone)):
        assert (a.task_id, a.sample, a.trial, a.status) == (b.task_id, b.sample, b.trial, b.status)
        assert [t.completion_ids for t in a.turns] == [t.completion_ids for t in b.turns]
        assert [t.prompt_ids for t in a.turns] == [t.prompt_ids for t in b.turns]
        for x, y in zip(a.turns, b.turns):
            np.testing.assert_allclose(x.completion_logprobs, y.completion_logprobs, atol=1e-5, rtol=0)
    assert len({tuple(t.turns[0].completion_ids) for t in together}) > 1  # samples differ


def test_recorded_logprobs_equal_a_forward_pass(dev_tasks, tokenizer, tiny):
    [trajectory] = sampled_engine(tiny, tokenizer).run(dev_tasks[:1], key=jax.random.key(2),
                                                       weights={"assistant": tiny})
    turn = trajectory.turns[0]
    ids = turn.prompt_ids + turn.completion_ids
    logits = tiny(np.asarray([ids[:-1]], np.int32))[0][0]
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # temperature 1, no top-k/p: the policy is the softmax
    p = len(turn.prompt_ids)
    expected = [float(log_probs[p - 1 + i, token]) for i, token in enumerate(turn.completion_ids)]
    np.testing.assert_allclose(turn.completion_logprobs, expected, atol=1e-4, rtol=0)


def test_sampling_after_a_donated_update_uses_the_new_weights(tiny):
    graphdef, lora, frozen = nnx.split(tiny, LoRA, ...)
    sampler = Sampler(tiny)
    prompts = [[5, 6, 7, 8], [9, 10]]
    before = sampler.generate((lora, frozen), prompts, SamplingPolicy(8, temperature=0.0), eos_ids=())
    update = jax.jit(lambda l: jax.tree.map(lambda x: x + 0.5, l), donate_argnums=0)
    new_lora = update(lora)
    after = sampler.generate((new_lora, frozen), prompts, SamplingPolicy(8, temperature=0.0), eos_ids=())
    merged = nnx.merge(graphdef, new_lora, frozen)
    greedy = SamplingPolicy(8, temperature=0.0)
    assert after.token_ids == Sampler(merged).generate(merged, prompts, greedy, eos_ids=()).token_ids
    assert after.token_ids != before.token_ids
    assert all(x.is_deleted() for x in jax.tree.leaves(lora))  # donation freed the old adapters
    with pytest.raises(ValueError, match="donated"):
        sampler.generate((lora, frozen), prompts, SamplingPolicy(8, temperature=0.0), eos_ids=())


def test_user_curriculum_is_seeded_restorable_and_boosts_informative_tasks(dev_tasks):
    user = User(dev_tasks[:10], seed=4, boost=5.0)
    first = [t.task_id for t in user.draw(4)]
    assert first == [t.task_id for t in User(dev_tasks[:10], seed=4, boost=5.0).draw(4)]
    user.record(dev_tasks[0].task_id, [True, False])  # mixed: informative
    user.record(dev_tasks[1].task_id, [True, True])
    weights = user.weights()
    assert weights[0] == pytest.approx(5 * weights[1]) and weights[1] == pytest.approx(weights[2])
    saved = json.loads(json.dumps(user.state()))
    expected = [t.task_id for t in user.draw(3)]
    again = User(dev_tasks[:10], seed=0, boost=5.0)
    again.restore(saved)
    assert [t.task_id for t in again.draw(3)] == expected
    uniform = User(dev_tasks[:10], seed=4, curriculum=False)
    uniform.record(dev_tasks[0].task_id, [True, False])
    assert np.allclose(uniform.weights(), 0.1)


def test_bad_settings_are_refused(tokenizer):
    with pytest.raises(ValueError, match="checker is 'maybe'"):
        RolloutConfig(checker="maybe")
    with pytest.raises(ValueError, match="trials must be a positive int"):
        RolloutConfig(trials=0)
    with pytest.raises(ValueError, match="needs a model for the Checker role"):
        RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(checker="learned"),
                      assistant=ScriptedReplies(OracleAgent))
    with pytest.raises(ValueError, match="needs a model to write reflections"):
        RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(trials=2), assistant=ScriptedReplies(OracleAgent))
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()), RolloutConfig(), assistant=ScriptedReplies(OracleAgent))
    with pytest.raises(ValueError, match="needs a key"):
        engine.run([make_task()])
