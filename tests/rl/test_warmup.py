"""The warm start's demonstrations: the oracle's episodes; the engine opens a bounded number of databases at once."""

from cmat_jax.agents import engine
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.user import User
from cmat_jax.envs.sql.env import SqlEnvConfig
from cmat_jax.envs.sql.generate import generate_tasks
from cmat_jax.rl import warmup


def test_chunked_demonstrations_equal_one_batch(monkeypatch):
    tasks = generate_tasks(12, 3, "lookup")
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    whole = warmup.demonstrations(tasks, user, SqlEnvConfig())
    monkeypatch.setattr(engine, "MAX_OPEN_EPISODES", 5)  # 5 + 5 + 2 episodes
    chunked = warmup.demonstrations(tasks, user, SqlEnvConfig())
    assert len(whole) == 12
    assert [[m.to_dict() for m in c] for c in chunked] == [[m.to_dict() for m in c] for c in whole]
    # Each conversation is the opening (instructions, "Ok.", the task), the oracle's query, its output, the answer.
    for conversation in whole:
        assert [m.role for m in conversation] == ["user", "assistant", "user", "assistant", "user", "assistant"]
        assert conversation[3].content.startswith("Action: Operation")
        assert conversation[5].content.startswith("Action: Answer")
