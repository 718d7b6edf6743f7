"""Rollout benchmark: episodes/s and new tokens/s of the batched rollout engine against transformers.

Two workloads. `--workload synthetic`: fixed-shape multi-turn episodes (--opening ids shared by the
--group-size samples of a task, --turns turns of --max-new-tokens sampled ids, --observation ids after
each), at every --batch, with the engine's sampler path keeping each episode's KV cache across turns
(persistent slots), the same path re-prefilling every turn, and a transformers loop calling `generate`
every turn; per-turn prefill and decode times (bench/rollout_synthetic.py). `--workload dbbench` (the
default, below): DBBench episodes through the whole engine against a transformers loop that generates one
episode turn at a time.

  python bench/bench_rollout.py --workload synthetic --preset smollm2_135m --batch 64,256
  python bench/bench_rollout.py --workload synthetic --preset codellama_7b --batch 64 --max-batch  # + largest batch
  python bench/bench_rollout.py --workload synthetic --preset tiny --dtype float32 --batch 4 --opening 16 \
      --turns 2 --max-new-tokens 3 --observation 4 --group-size 2   # CPU smoke

Workload: the packaged DBBench dev tasks (first --tasks of them, --group-size
samples each), a model of a preset's shape with random weights, sampling at
--temperature with --max-new-tokens per Assistant turn, the Checker role in
--checker mode and --trials attempts per episode (a reflection call after each
failed one), environment limit --max-rounds statements. Episodes open with
DBBench v0.2's instructions verbatim (--short-instructions: the short statement
of the same protocol that the tiny demo uses).

A random model never writes DBBench's action format, so left alone every
episode would end at its first reply as a format failure: no statement would
reach the Checker or the database. By default every Assistant reply therefore
opens with a forced action header, the ids of

    Action: Operation
    ```sql
    SELECT * FROM `<the task's table>` LIMIT 3;
    ```

placed after the prompt; the model then samples its --max-new-tokens after it
(the header's ids are part of the turn's record, with log-prob 0; they are not
counted as new tokens). Every episode then runs --max-rounds statements
through the Checker and the database and ends at the round limit: exactly
max_rounds + 1 Assistant turns, the same on both sides. --free-format drops the
header (episodes end where the model's text does).

cmat_jax side: `RolloutEngine` with `ModelReplies` (one sampler call per role
per turn over every live episode, token ids kept across turns; --cache picks
the KV cache mode, persistent slots by default). One full rollout with another
key warms the compiled programs; the next is measured.

Peer: the loop an AgentBench-style tool runs with transformers: per episode and
turn, the whole conversation is rendered with the chat template, tokenized and
passed to `generate` at batch size 1 (SDPA attention, dynamic cache); the same
Checker (static checks, then a learned Checker `generate` call), environment
and reflection steps follow. It plays --peer-episodes episodes spread evenly
over the task list (sample 0 of each), in its own process, before the JAX side
claims the device.

Reported per side: episodes/s, new tokens/s (ids sampled by every model role,
EOS included), Assistant turns per episode, prompt tokens per Assistant turn,
and where the time went: Assistant sampling, static checks, learned Checker
sampling, environment, reflection sampling, other (starting episodes, building
prompts, record keeping). For the engine, "static checks" is its Checker time
less the learned Checker's sampler calls (it includes building the learned
Checker's prompts), and "environment" its env time less the prompt extension
that follows each step (timed apart; it is in "other").

  python bench/bench_rollout.py --preset qwen2_5_1_5b --group-size 4
  python bench/bench_rollout.py --preset smollm2_135m --tokenizer DIR   # a SmolLM2-135M-shaped model
  python bench/bench_rollout.py --preset tiny --dtype float32 --tasks 8 --group-size 2 --peer-episodes 2  # CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from typing import Optional

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import run_json  # noqa: E402
from cmat_jax.agents.checker_role import CHECKER_MODES  # noqa: E402
from cmat_jax.models.config import ModelConfig, preset  # noqa: E402

# Shapes the benchmark needs that have no preset (no checkpoint of theirs is imported elsewhere).
SHAPES = {
    # HuggingFaceTB/SmolLM2-135M's config.json: a tied-embedding Llama.
    "smollm2_135m": ModelConfig(
        family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
        num_kv_heads=3, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-5, qkv_bias=False,
        tie_word_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_id=2),
}
HEADER_LIMIT = 3  # rows the forced statement asks for: a few rows of the table as the observation
TIME_KEYS = ("assistant_s", "static_checker_s", "learned_checker_s", "env_s", "reflection_s", "other_s")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="dbbench", choices=("dbbench", "synthetic"),
                   help="dbbench: DBBench episodes through the whole engine; synthetic: the fixed-shape multi-turn "
                   "episodes of bench/rollout_synthetic.py (persistent slots, re-prefill, transformers)")
    p.add_argument("--preset", default="qwen2_5_1_5b",
                   help=f"model shape: a cmat_jax preset (tiny, qwen2_5_1_5b, ...) or {', '.join(SHAPES)}")
    p.add_argument("--tokenizer", help="local tokenizer directory (default: the bundled 1,024-token tokenizer, "
                   "whose ids fit every shape)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--attention-impl", default="auto", choices=("auto", "xla", "cudnn"))
    p.add_argument("--tasks", type=int, default=60, help="the first N packaged DBBench dev tasks (60 in all)")
    p.add_argument("--group-size", type=int, help="samples per task (G); default 1 (dbbench), 4 (synthetic)")
    p.add_argument("--max-new-tokens", type=int, help="per Assistant turn; default 64 (dbbench), 128 (synthetic)")
    p.add_argument("--cache", default="persistent", choices=("persistent", "reprefill"),
                   help="dbbench: the engine's KV cache mode (rollout cache)")
    p.add_argument("--batch", default="64", help="synthetic: episodes played at once, a comma list (64,256)")
    p.add_argument("--opening", type=int, default=512, help="synthetic: ids of a task's opening")
    p.add_argument("--turns", type=int, default=5, help="synthetic: turns per episode")
    p.add_argument("--observation", type=int, default=64, help="synthetic: ids of each observation")
    p.add_argument("--modes", default="persistent,reprefill", help="synthetic: the cmat_jax sides to measure")
    p.add_argument("--unroll-decode-layers", action="store_true",
                   help="synthetic: decode with the layers unrolled (SamplerConfig.unroll_decode_layers)")
    p.add_argument("--min-cache-slots", type=int, default=256,
                   help="synthetic: the persistent slots' smallest cache length (SlotSampler); the whole rollout's "
                        "length allocates the cache once, so it never grows (growing holds the old and new caches)")
    p.add_argument("--max-batch", action="store_true",
                   help="synthetic: also search the largest batch whose persistent-slot rollout fits in device "
                   "memory, from the largest --batch up (one whole rollout per try)")
    p.add_argument("--temperature", type=float, default=1.0, help="Assistant sampling temperature (0 = greedy)")
    p.add_argument("--max-rounds", type=int, default=4, help="statements per episode (DBBench: 15)")
    p.add_argument("--checker", default="static+learned", choices=CHECKER_MODES)
    p.add_argument("--checker-max-new-tokens", type=int, default=32, help="per learned Checker verdict (greedy)")
    p.add_argument("--trials", type=int, default=1, help="attempts per episode; > 1 adds reflection calls")
    p.add_argument("--reflection-max-new-tokens", type=int, default=64, help="per reflection (greedy)")
    p.add_argument("--max-len", type=int, default=4096, help="prompt + new tokens (capped by the model's context)")
    p.add_argument("--free-format", action="store_true", help="no forced action header (see the docstring)")
    p.add_argument("--short-instructions", action="store_true",
                   help="open episodes with prompts.SHORT_INSTRUCTIONS instead of DBBench's verbatim instructions")
    p.add_argument("--peer-episodes", type=int, default=8, help="episodes the transformers loop plays")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-peer", action="store_true", help="skip the transformers loop")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # child mode: run the transformers loop
    args = p.parse_args(argv)
    synthetic = args.workload == "synthetic"
    args.group_size = args.group_size or (4 if synthetic else 1)
    args.max_new_tokens = args.max_new_tokens or (128 if synthetic else 64)
    try:
        args.batch = [int(b) for b in args.batch.split(",")]
    except ValueError:
        p.error(f"--batch must be a comma list of ints, got {args.batch!r}")
    args.modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("persistent", "reprefill") for m in args.modes):
        p.error(f"--modes must name persistent and/or reprefill, got {','.join(args.modes)!r}")
    for name in ("tasks", "group_size", "max_new_tokens", "max_rounds", "checker_max_new_tokens", "trials",
                 "reflection_max_new_tokens", "max_len", "peer_episodes", "opening", "turns", "observation",
                 "min_cache_slots"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature < 0:
        p.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if any(b < 1 or b % args.group_size for b in args.batch):
        p.error(f"--batch values must be positive multiples of --group-size {args.group_size}, got {args.batch}")
    try:
        model_config(args.preset)
    except (KeyError, ValueError) as e:
        p.error(f"{e.args[0]}; or one of the benchmark's shapes: {', '.join(SHAPES)}")
    return args


def model_config(name: str) -> ModelConfig:
    key = name.replace("-", "_").replace(".", "_").lower()
    return SHAPES[key] if key in SHAPES else preset(name)


# -- the workload, shared by both sides ------------------------------------------------------


def load_workload(args):
    """(tasks, tokenizer, max_len): the first --tasks dev tasks and the tokenizer, checked against the shape."""
    from cmat_jax.data.tokenizer import load_tokenizer
    from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, load_tasks

    tasks = load_tasks(DBBENCH_DEV_TASKS)
    if args.tasks > len(tasks):
        raise SystemExit(f"error: --tasks {args.tasks} asks for more than the {len(tasks)} packaged dev tasks")
    tokenizer = load_tokenizer(args.tokenizer)
    cfg = model_config(args.preset)
    if len(tokenizer) > cfg.vocab_size:
        raise SystemExit(f"error: the tokenizer has {len(tokenizer)} ids but the {args.preset} shape only "
                         f"{cfg.vocab_size}; use a tokenizer of that model or the bundled one")
    max_len = min(args.max_len, cfg.context_limit or cfg.max_position_embeddings)
    return tasks[:args.tasks], tokenizer, max_len


def make_user(args, tasks):
    from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
    from cmat_jax.agents.user import User

    return User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS if args.short_instructions else None)


def operation_header(task) -> str:
    return f"Action: Operation\n```sql\nSELECT * FROM `{task.table_name}` LIMIT {HEADER_LIMIT};\n```\n"


class Headers:
    """The forced header's text and ids per task ("" and [] with --free-format); a subclass may choose per
    request (`request_text`)."""

    def __init__(self, tokenizer, free_format: bool):
        self.tokenizer = tokenizer
        self.free_format = free_format
        self._ids: dict[str, list[int]] = {}

    def text(self, task) -> str:
        return "" if self.free_format else operation_header(task)

    def ids(self, task) -> list[int]:
        return self.text_ids(self.text(task))

    def request_text(self, request) -> str:
        return self.text(request.task)

    def text_ids(self, text: str) -> list[int]:
        from cmat_jax.data.tokenizer import tokenize_text

        if text not in self._ids:
            self._ids[text] = tokenize_text(self.tokenizer, text) if text else []
        return self._ids[text]

    def longest(self, tasks) -> int:
        return max(len(self.ids(t)) for t in tasks)


def peer_indices(args) -> list[int]:
    """Tasks the peer plays (sample 0 of each): spread evenly over the list, so its prompts are as long."""
    count = min(args.peer_episodes, args.tasks)
    return sorted({round(i * args.tasks / count) for i in range(count)})


def summarize(episodes: int, turns: int, prompt_tokens: int, new_tokens: dict, times: dict, total_s: float,
              statuses: Counter) -> dict:
    out = {
        "episodes": episodes,
        "episodes_per_s": episodes / total_s,
        "new_tokens": sum(new_tokens.values()),
        "new_tokens_per_s": sum(new_tokens.values()) / total_s,
        "new_tokens_by_role": dict(new_tokens),
        "assistant_turns_per_episode": turns / episodes,
        "prompt_tokens_per_assistant_turn": prompt_tokens / max(turns, 1),
        "statuses": dict(statuses),
        "total_s": total_s,
    }
    out.update(times)
    out["other_s"] = total_s - sum(times.values())
    return out


# -- cmat_jax -------------------------------------------------------------------------------


class TimedReplies:
    """Wraps a reply source: times its calls and counts the ids it sampled (a forced header's ids are not)."""

    def __init__(self, source, headers: Optional[Headers] = None, record: bool = False, header_in_reply: bool = False):
        self.source = source
        self.headers = headers
        # The forced header's ids come out of the reply's max_new_tokens (prompt budgets need no room for it).
        self.header_in_reply = header_in_reply
        self.seconds = 0.0
        self.sampled = 0
        # With `record`: per call, what the model saw and did (bench_iteration.py's peer replays the calls).
        self.record = record
        self.calls: list[dict] = []

    def __call__(self, weights, requests, settings):
        from cmat_jax.agents.replies import Reply

        start = time.perf_counter()
        texts = [self.headers.request_text(r) if self.headers else "" for r in requests]
        heads = [self.headers.text_ids(t) if self.headers else [] for t in texts]
        forced = [dataclasses.replace(r, prompt_ids=list(r.prompt_ids) + h) if h else r
                  for r, h in zip(requests, heads)]
        if self.header_in_reply and any(heads):
            room = settings.max_new_tokens - max(map(len, heads))
            if room < 1:
                raise ValueError(f"max_new_tokens={settings.max_new_tokens} leaves no room for a sampled id after "
                                 f"the forced header's {max(map(len, heads))} ids; raise it")
            settings = dataclasses.replace(settings, max_new_tokens=room)
        sampled = self.source(weights, forced, settings)
        self.sampled += sum(len(r.ids) for r in sampled)
        replies = sampled if self.headers is None else [
            Reply(t + r.text, h + r.ids, [0.0] * len(h) + r.logprobs, r.finish_reason)
            for t, h, r in zip(texts, heads, sampled)]
        self.seconds += time.perf_counter() - start
        if self.record and requests:
            self.calls.append({"prompts": [list(r.prompt_ids) for r in forced],
                               "new_tokens": [len(r.ids) for r in sampled], "temperature": settings.temperature})
        return replies

    def reset(self) -> None:
        self.seconds, self.sampled, self.calls = 0.0, 0, []

    # Persistent slots: the engine names each episode's context and frees it through its reply source.
    @property
    def max_contexts(self):
        return self.source.max_contexts

    def forget(self, uid) -> None:
        self.source.forget(uid)

    def clear_contexts(self) -> None:
        self.source.clear_contexts()


def build_model(args):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cmat_jax.models.transformer import Transformer

    cfg = model_config(args.preset)
    dtype = jnp.dtype(args.dtype)

    def make():
        return Transformer(cfg, dtype=dtype, param_dtype=dtype, attention_impl=args.attention_impl,
                           rngs=nnx.Rngs(args.seed))

    # Initialise on device in one program rather than parameter by parameter.
    graphdef, _ = nnx.split(nnx.eval_shape(make))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())


def run_engine(args) -> dict:
    import jax
    from flax import nnx

    from cmat_jax.agents.replies import ModelReplies
    from cmat_jax.agents.trajectory import ASSISTANT_ROLE
    from cmat_jax.rollout import build_rollout_engine
    from cmat_jax.sampling.sampler import Sampler, SamplerConfig
    from cmat_jax.sampling.policy import SamplingPolicy
    from cmat_jax.settings.rollout import EngineSettings

    tasks, tokenizer, max_len = load_workload(args)
    headers = Headers(tokenizer, args.free_format)
    model = build_model(args)
    sampler = Sampler(model, SamplerConfig(max_len=max_len))
    replies = ModelReplies(sampler, tokenizer)
    assistant, checker, reflector = TimedReplies(replies, headers), TimedReplies(replies), TimedReplies(replies)
    settings = EngineSettings(
        assistant=SamplingPolicy(args.max_new_tokens, args.temperature),
        checker_sampling=SamplingPolicy(args.checker_max_new_tokens, 0.0),
        reflection=SamplingPolicy(args.reflection_max_new_tokens, 0.0),
        trials=args.trials, checker=args.checker, cache=args.cache, max_rounds=args.max_rounds,
        # The forced header goes after the prompt, so the prompt leaves room for it too.
        prompt_budget=max_len - args.max_new_tokens - headers.longest(tasks))
    engine = build_rollout_engine(settings, assistant=assistant, tokenizer=tokenizer, checker=checker,
                                  reflector=reflector)
    state = nnx.state(model)
    weights = {"assistant": state, "checker": state}

    def rollout(seed):
        for source in (assistant, checker, reflector):
            source.reset()
        start = time.perf_counter()
        trajectories = engine.run(tasks, group_size=args.group_size, key=jax.random.key(seed), weights=weights,
                                  user=make_user(args, tasks))
        return trajectories, time.perf_counter() - start

    _, first_s = rollout(args.seed + 1)  # compiles every program the measured rollout needs (same shapes)
    compiles_before = sampler.num_compiles
    trajectories, total_s = rollout(args.seed)
    stats = engine.last_stats
    turns = [t for tr in trajectories for t in tr.role_turns(ASSISTANT_ROLE)]
    times = {name: getattr(stats, name) for name in ("assistant_s", "static_checker_s", "learned_checker_s",
                                                     "env_s", "reflection_s")}
    out = summarize(len(trajectories), len(turns), sum(len(t.prompt_ids) for t in turns),
                    {"assistant": assistant.sampled, "checker": checker.sampled, "reflection": reflector.sampled},
                    times, total_s, Counter(tr.status for tr in trajectories))
    out.update(
        warmup_s=first_s - total_s,
        sampler_calls=stats.sampler_calls,
        programs_compiled=sampler.num_compiles,
        programs_compiled_while_measured=sampler.num_compiles - compiles_before,
        segments_per_trajectory=sum(1 + max(t.segment for t in tr.turns) for tr in trajectories if tr.turns)
        / len(trajectories),
        prompt_s=stats.prompt_s,
        dropped_observations=sum(tr.dropped_observations for tr in trajectories),
        cache=args.cache,
        slot_stats=dataclasses.asdict(replies.slots.stats),
    )
    return out


# -- transformers loop ----------------------------------------------------------------------


def build_peer_model(args):
    """A transformers model of the preset's shape with random weights, on the GPU when there is one."""
    import torch
    import transformers

    from cmat_jax.models.config import to_hf_config

    transformers.logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    hf = to_hf_config(model_config(args.preset), args.dtype)
    hf.pop("architectures", None)
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model(hf.pop("model_type"), **hf), dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def run_peer(args) -> dict:
    """The transformers loop (see the module docstring). Imports torch here: only the peer needs it."""
    import torch
    import transformers

    from cmat_jax.agents import prompts as prompt_lib
    from cmat_jax.agents.memory import ReflectionMemory, fit_observations, render_memory
    from cmat_jax.agents.trajectory import CONTEXT_OVERFLOW, CORRECT, STATUS_OF_OUTCOME
    from cmat_jax.chat import ASSISTANT, USER, Message
    from cmat_jax.data.tokenizer import decode_ids, end_of_turn_ids, render_chat, tokenize_text
    from cmat_jax.envs.sql.checker import Checker
    from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig

    tasks, tokenizer, max_len = load_workload(args)
    headers = Headers(tokenizer, args.free_format)
    model = build_peer_model(args)
    device = model.device.type
    eos = end_of_turn_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    render = lambda messages: render_chat(tokenizer, messages, add_generation_prompt=True)  # noqa: E731
    times = dict.fromkeys(("assistant_s", "static_checker_s", "learned_checker_s", "env_s", "reflection_s"), 0.0)
    new_tokens = Counter(assistant=0, checker=0, reflection=0)

    def generate(ids: list[int], max_new: int, temperature: float, role: str) -> str:
        """One `generate` call at batch size 1; the reply's text (without its end-of-turn id)."""
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
            dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(
                1, len(ids), dtype=torch.long, device=device), max_new_tokens=max_new, eos_token_id=eos,
                pad_token_id=pad, **sampling)
        new = out[0, len(ids):].tolist()
        new_tokens[role] += len(new)
        return decode_ids(tokenizer, new[:-1] if new and new[-1] in eos else new)

    def timed(key, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        times[key] += time.perf_counter() - start
        return out

    user = make_user(args, tasks)
    memory = ReflectionMemory()
    budget = max_len - args.max_new_tokens - headers.longest(tasks)  # the engine's prompt budget
    dropped = [0]
    # As in the engine, only the Checker role gates statements.
    env = SqlEnv(SqlEnvConfig(max_rounds=args.max_rounds, checker="off"))

    def play(task, trial: int) -> tuple[str, list[Message], int, int, int]:
        """(status, messages, opening length, Assistant turns, prompt tokens of those turns)."""
        messages = user.opening(env.reset(task), render_memory(memory.recent(task.task_id) if trial else []))
        opening, turns, prompt_tokens = len(messages), 0, 0
        static = Checker.for_task(task) if "static" in args.checker else None
        while True:
            ids = tokenize_text(tokenizer, render(messages))  # the whole conversation again
            if len(ids) > budget:  # short-term memory as the engine keeps it: drop the oldest observations
                fits = lambda m: len(tokenize_text(tokenizer, render(m))) <= budget  # noqa: E731
                messages, count = fit_observations(messages, opening, fits)
                dropped[0] += count
                ids = tokenize_text(tokenizer, render(messages))
                if len(ids) > budget:
                    env.close()
                    return CONTEXT_OVERFLOW, messages, opening, turns, prompt_tokens
            turns += 1
            prompt_tokens += len(ids)  # as the engine records a prompt: without the forced header
            ids += headers.ids(task)
            text = timed("assistant_s", generate, ids, args.max_new_tokens, args.temperature, "assistant")
            text = headers.text(task) + text
            sql, rejection = env.pending_action(text), None
            if sql is not None and static is not None:
                verdict = timed("static_checker_s", static.check, sql)
                rejection = None if verdict.ok else verdict.reason
            if sql is not None and rejection is None and "learned" in args.checker:
                check_ids = tokenize_text(tokenizer, render(prompt_lib.checker_prompt(task.prompt, sql)))
                reply = timed("learned_checker_s", generate, check_ids, args.checker_max_new_tokens, 0.0, "checker")
                parsed = prompt_lib.parse_checker_reply(reply)
                if not parsed.approve:
                    rejection = "The Checker rejected this statement: " + (
                        parsed.reason or "the Checker rejected this statement")
            observation, _, done, info = timed("env_s", env.step, text, rejection)
            messages.append(Message(ASSISTANT, text))
            if done:
                return STATUS_OF_OUTCOME[env.outcome(info)], messages, opening, turns, prompt_tokens
            messages.append(Message(USER, observation))

    indices = peer_indices(args)
    # Warm-up: CUDA context, kernels and allocator, on one generate call that is not measured.
    start = time.perf_counter()
    generate(tokenize_text(tokenizer, render(user.opening(env.reset(tasks[0])))), args.max_new_tokens,
             args.temperature, "assistant")
    env.close()
    warmup_s = time.perf_counter() - start
    for role in new_tokens:
        new_tokens[role] = 0
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    statuses, episodes, all_turns, all_prompt_tokens = Counter(), 0, 0, 0
    pending = [tasks[i] for i in indices]
    for trial in range(args.trials):
        failed = []
        for task in pending:
            status, messages, opening, turns, prompt_tokens = play(task, trial)
            statuses[status] += 1
            episodes += 1
            all_turns += turns
            all_prompt_tokens += prompt_tokens
            if status != CORRECT:
                failed.append((task, messages[opening:]))
        if trial + 1 == args.trials or not failed:
            break
        for task, episode in failed:  # one reflection per failed episode, into the task's memory
            ids = tokenize_text(tokenizer, render(prompt_lib.reflection_prompt(task.prompt, episode)))
            text = timed("reflection_s", generate, ids, args.reflection_max_new_tokens, 0.0, "reflection")
            memory.add(task.task_id, text)
        pending = [task for task, _ in failed]
    total_s = time.perf_counter() - start
    out = summarize(episodes, all_turns, all_prompt_tokens, new_tokens, times, total_s, statuses)
    out.update(warmup_s=warmup_s, task_indices=indices, dropped_observations=dropped[0],
               device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
               versions={"torch": torch.__version__, "transformers": transformers.__version__})
    return out


# -- the synthetic workload (bench/rollout_synthetic.py) -------------------------------------


def synthetic_workloads(args) -> list:
    from bench.rollout_synthetic import Workload

    vocab = model_config(args.preset).vocab_size
    return [Workload(batch, args.group_size, args.opening, args.turns, args.max_new_tokens, args.observation, vocab,
                     args.seed) for batch in args.batch]


def run_synthetic_ours(args) -> dict:
    """{batch: {mode: result}} for every --batch and --modes, one model; with --max-batch also
    {"largest_batch": {...}} (bench/rollout_synthetic.largest_batch)."""
    import jax

    from bench.rollout_synthetic import largest_batch, run_ours

    if args.max_batch and jax.default_backend() == "cpu":
        raise SystemExit("--max-batch searches an accelerator's memory; on CPU it would grow until the host runs "
                         "out of memory: drop it")
    model = build_model(args)
    out = {w.batch: {mode: run_ours(model, w, mode, args.seed, args.unroll_decode_layers, args.min_cache_slots)
                     for mode in args.modes}
           for w in synthetic_workloads(args)}
    if args.max_batch:
        template = max(synthetic_workloads(args), key=lambda w: w.batch)
        out["largest_batch"] = largest_batch(model, lambda b: dataclasses.replace(template, batch=b),
                                             max(args.batch), args.seed, args.unroll_decode_layers,
                                             args.min_cache_slots)
    return out


def run_synthetic_peer(args) -> dict:
    import torch
    import transformers

    from bench.rollout_synthetic import run_peer as play

    model = build_peer_model(args)
    out = {str(w.batch): play(model, w, args.seed) for w in synthetic_workloads(args)}
    out["device"] = torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu"
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return out


def synthetic_main(args, argv: list[str]) -> None:
    from bench.rollout_synthetic import print_results

    if args.peer:
        print(json.dumps(run_synthetic_peer(args)), flush=True)
        return
    peer = None
    if not args.no_peer:  # first, so its process has exited before JAX claims the device memory
        peer = run_json([sys.executable, os.path.abspath(__file__), *argv, "--peer"], timeout=3600)
        if "error" in peer:
            raise SystemExit(f"the transformers loop failed: {peer['error']}")
    ours = run_synthetic_ours(args)
    info = machine()
    versions = dict(info["versions"], **(peer or {}).get("versions", {}))
    print(f"synthetic rollout: preset={args.preset} dtype={args.dtype} seed={args.seed}; device: {info['device']} "
          f"({info['cpu_cores']} CPU cores); " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for workload in synthetic_workloads(args):
        print_results(args.preset, workload, ours[workload.batch], None if peer is None else peer[str(workload.batch)])
    if "largest_batch" in ours:
        found = ours["largest_batch"]
        print(f"largest batch with persistent slots: {found['largest']} (first failure at {found['first_failure']}); "
              "tried: " + ", ".join(f"{b}: {r if r == 'fits' else 'out of memory'}" for b, r in found["tried"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": shlex.join(["python", "bench/bench_rollout.py", *argv]), "machine": info,
                       "args": vars(args), "cmat_jax": ours, "transformers": peer}, f, indent=2)


# -- report ---------------------------------------------------------------------------------


def machine() -> dict:
    import flax
    import jax
    import sqlglot

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],  # other work on the machine at the end
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
            "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                         "sqlglot": sqlglot.__version__}}


def print_table(args, ours: dict, peer: Optional[dict], info: dict) -> None:
    header_note = "no forced header" if args.free_format else "forced operation header"
    print(f"\nrollout: preset={args.preset} dtype={args.dtype} tasks={args.tasks}x{args.group_size} "
          f"max_new_tokens={args.max_new_tokens} temperature={args.temperature} checker={args.checker} "
          f"trials={args.trials} max_rounds={args.max_rounds} ({header_note}, "
          f"{'short' if args.short_instructions else 'DBBench'} instructions) seed={args.seed}")
    versions = dict(info["versions"], **(peer or {}).get("versions", {}))
    print(f"device: {info['device']} ({info['cpu_cores']} CPU cores, {info['cpu']}); "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"cmat_jax ({ours['cache']} KV cache) compiled {ours['programs_compiled']} programs "
          f"({ours['programs_compiled_while_measured']} while measured), {ours['sampler_calls']} reply calls, "
          f"{ours['segments_per_trajectory']:.2f} segments per trajectory")
    for name, r in (("cmat_jax", ours), ("transformers", peer)):
        if r is not None:
            print(f"{name}: statuses {r['statuses']}, {r['dropped_observations']} observations dropped to fit "
                  "the prompt budget")
    header = (f"{'implementation':<20}{'episodes':>9}{'episodes/s':>12}{'new tok/s':>12}{'turns/ep':>10}"
              f"{'prompt tok/turn':>17}{'warm-up s':>11}")
    print(header)
    print("-" * len(header))
    rows = [("cmat_jax engine", ours)] + ([("transformers loop", peer)] if peer else [])
    for name, r in rows:
        print(f"{name:<20}{r['episodes']:>9}{r['episodes_per_s']:>12.3f}{r['new_tokens_per_s']:>12.1f}"
              f"{r['assistant_turns_per_episode']:>10.2f}{r['prompt_tokens_per_assistant_turn']:>17.1f}"
              f"{r['warmup_s']:>11.2f}")
    if peer:
        print(f"{'ratio':<20}{'':>9}{ours['episodes_per_s'] / peer['episodes_per_s']:>11.2f}x"
              f"{ours['new_tokens_per_s'] / peer['new_tokens_per_s']:>11.2f}x")
    print("\nwhere the time went (s, share of the measured wall time)")
    names = ("assistant", "static checks", "learned checker", "environment", "reflection", "other")
    header = f"{'implementation':<20}" + "".join(f"{n:>18}" for n in names) + f"{'total':>10}"
    print(header)
    print("-" * len(header))
    for name, r in rows:
        cells = "".join(f"{share(r[k], r['total_s']):>18}" for k in TIME_KEYS)
        print(f"{name:<20}{cells}{r['total_s']:>10.2f}")


def share(seconds: float, total_s: float) -> str:
    return f"{seconds:.3f} ({100 * seconds / total_s:.0f}%)"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.workload == "synthetic":
        synthetic_main(args, argv)
        return
    if args.peer:
        print(json.dumps(run_peer(args)), flush=True)
        return
    # The peer runs first, so its process has exited before JAX claims the device memory.
    peer = None
    if not args.no_peer:
        peer = run_json([sys.executable, os.path.abspath(__file__), *argv, "--peer"], timeout=3600)
        if "error" in peer:
            raise SystemExit(f"the transformers loop failed: {peer['error']}")
    ours = run_engine(args)
    info = machine()
    print_table(args, ours, peer, info)
    if args.json:
        ratio = None if peer is None else {k: ours[k] / peer[k] for k in ("episodes_per_s", "new_tokens_per_s")}
        with open(args.json, "w") as f:
            json.dump({"command": shlex.join(["python", "bench/bench_rollout.py", *argv]), "machine": info,
                       "args": vars(args), "cmat_jax": ours, "transformers": peer, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
