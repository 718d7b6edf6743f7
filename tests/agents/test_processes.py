"""The rollout engine split over processes equals one process: each process plays its share of the tasks, and
every reply call joins all shares. Processes are simulated by threads here (a fast stand-in, with each
thread's own engine, reply source and slot table); tests/distributed runs the real thing in 2 processes."""

import pickle
import threading

import jax
import pytest

from cmat_jax import distributed
from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.memory import ReflectionMemory
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.replies import ModelReplies
from cmat_jax.agents.user import User
from cmat_jax.envs.sql.env import SqlEnvConfig, SqlEnvironments
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.sampler import Sampler, SamplerConfig
from tests.agents.test_slots import Forced, assert_same_records, sharp_tiny_model

PROCESSES = 2


class ThreadProcesses:
    """`jax.process_index`, `jax.process_count` and `distributed.gather_objects` for threads standing in for
    processes; a gather hands out copies, as the real one does."""

    def __init__(self, count: int):
        self.count = count
        self.barrier = threading.Barrier(count, timeout=300)  # a thread that fails breaks it: no hang
        self.values = [None] * count
        self.local = threading.local()

    def index(self) -> int:
        return self.local.index

    def gather(self, value):
        self.values[self.index()] = pickle.dumps(value)
        self.barrier.wait()
        out = [pickle.loads(v) for v in self.values]
        self.barrier.wait()
        return out

    def run(self, fn):
        results, errors = [None] * self.count, []

        def body(index):
            self.local.index = index
            try:
                results[index] = fn()
            except BaseException as e:  # noqa: B902 (reported below, in the test's thread)
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(i,)) for i in range(self.count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def rollout(model, tokenizer, tasks, slots):
    """One process's rollout: 3 tasks x 2 samples x 2 trials at T 1.0, persistent KV slots, at most `slots`
    episodes at once, reflections on failed trials. Returns the trajectories, memory and episodes played."""
    replies = ModelReplies(Sampler(model, SamplerConfig(max_len=1024)), tokenizer)
    config = RolloutConfig(assistant=SamplingPolicy(6, 1.0), reflection=SamplingPolicy(6, 1.0), trials=2,
                           checker="static", cache="persistent", slots=slots, prompt_budget=1024 - 6 - 32)
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig(max_rounds=4)), config, assistant=Forced(replies, tokenizer),
                           tokenizer=tokenizer, reflector=replies)
    memory = ReflectionMemory()
    memory.add("earlier task", "a reflection from an earlier iteration")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    trajectories = engine.run(tasks, group_size=2, key=jax.random.key(7), weights={"assistant": model},
                              memory=memory, user=user)
    return trajectories, memory.state(), engine.last_stats.episodes


@pytest.fixture(scope="module")
def runs(dev_tasks, tokenizer):
    tiny = sharp_tiny_model()
    tasks = dev_tasks[:3]
    one = rollout(tiny, tokenizer, tasks, slots=4)
    processes = ThreadProcesses(PROCESSES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jax, "process_count", lambda: PROCESSES)
        patch.setattr(jax, "process_index", processes.index)
        patch.setattr(distributed, "gather_objects", processes.gather)
        split = processes.run(lambda: rollout(tiny, tokenizer, tasks, slots=4))
    return one, split


def test_processes_play_their_share_and_get_every_trajectory(runs):
    (ours, memory, played), split = runs
    assert len(ours) == 12 and played == 12  # 3 tasks x 2 samples x 2 trials: every answer is wrong
    # Task i is played by process i mod 2: tasks 0 and 2 (8 episodes) and task 1 (4).
    assert [p for _, _, p in split] == [8, 4]
    for theirs, their_memory, _ in split:
        assert their_memory == memory  # the earlier entry first, then every task's reflections in order
        assert_same_records(ours, theirs)
    # What the comparison covered: uneven episode lengths, reflections shown to retries, sampled ids.
    assert {len(t.role_turns("assistant")) for t in ours} == {2, 3, 4}
    assert all(t.memory_shown for t in ours if t.trial == 1)
    assert len(memory["entries"]) == 4 and all(len(v) == 2 for k, v in memory["entries"].items()
                                               if k != "earlier task")
