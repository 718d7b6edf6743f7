"""Whole CMAT iterations of a recipe at real shape: cmat_jax against transformers + PEFT, in the same run.

    python bench/bench_iteration.py --shape qwen_1_8b       # configs/cmat_qwen_1_8b.py
    python bench/bench_iteration.py --shape qwen2_5_1_5b    # configs/cmat_qwen2_5_1_5b.py
    python bench/bench_iteration.py --shape codellama_7b    # configs/cmat_codellama_7b.py
    python bench/bench_iteration.py --shape tiny            # CPU smoke: the Qwen2.5 recipe at the tiny preset
    python bench/bench_iteration.py --shape qwen2_5_1_5b --set rollout.max_rounds=4 --no-peer   # any override

The workload is the recipe itself (16 tasks x 8 samples, reflection on, the static Checker, its context,
precision, remat, microbatches and episodes at once), run with seeded random weights of the recipe's
shape (model.preset, model.random_init) and the bundled tokenizer, whose ids fit every shape. `--set
key=value` overrides any config field (the settings check it as the CLI does); the training pool is cut to
--train-tasks tasks (it changes what the warm start plays, not an iteration's work).

cmat_jax side, in its own process: the recipe's CmatRun makes --warm-steps warm-start SFT steps (so the
peak memory covers the warm start's step too), then --warmup-iterations iterations (compiling the
programs) and --iterations measured ones. A random model never writes DBBench's action format, so every
Assistant reply opens with bench_rollout.py's forced operation header (a statement the Checker checks and
the database runs, about 30 ids of the bundled tokenizer) and samples the rest of rollout.max_new_tokens
after it: every episode plays its
rollout.max_rounds statements, fails, is reflected on, and tried again. Reported per iteration (means over
the measured ones): the Assistant's sampling, reflection, the Checker, the environment and the rest of the
rollout (prompts, record keeping), the update (advantages, packing, the jitted steps), peak device memory,
rollout tokens/s (ids the model sampled, every role, over the rollout's wall time) and update tokens/s
(tokens of the packed rows over the update's time, as the loop's records count them).

Peer, in its own process after the first has exited: transformers + PEFT doing the same iteration, the
last measured one. Every reply call the engine made is replayed as one batched `generate` call over the
same prompts (left-padded, a static cache, the call's temperature, exactly as many new ids as the engine's
longest reply of the call), then the update: PPO-clip on the same packed rows (the same advantages and
sampler log-probs), the recipe's microbatches accumulated, gradient checkpointing, AdamW at rl.learning_rate.
The peer gets each row's per-segment position ids and no segment mask (transformers may derive one from
the positions, or attend over the whole row: the same attention FLOPs either way).
The Checker, the environment and the rest are host code both sides share; the peer's iteration counts
cmat_jax's measured seconds for them, so the ratio compares the model work and adds the same host time to
both. Without torch.compile: every call has its own shape, so it would recompile every call.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO, peak_memory_gib, print_table, run_json, versions  # noqa: E402

RECIPES = {"qwen_1_8b": "cmat_qwen_1_8b", "qwen2_5_1_5b": "cmat_qwen2_5_1_5b", "codellama_7b": "cmat_codellama_7b",
           "tiny": "cmat_qwen2_5_1_5b"}  # tiny: shrink_to_tiny() of that recipe
PARTS = ("assistant_s", "reflection_s", "checker_s", "env_s", "other_s", "update_s")
HOST_PARTS = ("checker_s", "env_s", "other_s")  # host code both sides share


def recipe_config(shape: str):
    """configs/<the shape's recipe>.py's config, as the CLI loads it."""
    name = RECIPES[shape]
    spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def shrink_to_tiny(c) -> None:
    """A recipe's config at the tiny preset with CPU-sized counts and lengths: one warm-start step and one
    iteration, one row per microbatch (the recipe's microbatches, remat and precision are kept)."""
    c.model.hf_dir, c.model.preset, c.model.random_init = "", "tiny", True
    c.tasks.train_count, c.tasks.eval, c.tasks.eval_count = 4, "", 2
    c.train.steps, c.train.warmup_steps = 1, 0
    rows = c.train.microbatches
    c.data.batch_size, c.data.seq_len = rows, 1024
    c.rollout.tasks_per_iteration, c.rollout.group_size = 2, 2
    # 48 new tokens: room for bench_iteration.py's forced action header (about 30 ids) and a few sampled ones.
    c.rollout.max_new_tokens, c.rollout.max_len, c.rollout.max_rounds = 48, 1024, 2
    c.reflection.max_new_tokens = 8
    c.rl.iterations, c.rl.rows, c.rl.seq_len = 1, rows, 1024
    c.checkpoint.async_save = False


def bench_config(args, workdir: str):
    """The shape's recipe with random weights of its shape, the bench's task pool and --set overrides."""
    c = recipe_config(args.shape)
    if args.shape == "tiny":
        shrink_to_tiny(c)
    c.model.hf_dir, c.model.random_init = "", True
    c.data.tokenizer = ""  # the bundled tokenizer: its 1,024 ids fit every shape
    c.tasks.train_count = args.train_tasks
    c.train.steps = args.warm_steps
    c.rl.iterations = args.warmup_iterations + args.iterations
    c.workdir, c.overwrite = workdir, True
    for item in args.set:
        key, value = item.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a string
        c.update_from_flattened_dict({key: value})
    return c


# -- cmat_jax --------------------------------------------------------------------------------


def group_headers(tokenizer, max_rounds: int):
    """bench_rollout.py's forced headers, with two rewards in every task's group: an odd episode's last
    statement is an Operation without SQL (a format failure: rl.format_penalty), the others reach the round
    limit (reward 0). A group of equal rewards carries no signal and is not trained, so without this the
    update of a random model would train nothing."""
    from bench.bench_rollout import Headers
    from cmat_jax.chat import ASSISTANT

    class GroupHeaders(Headers):
        def request_text(self, request) -> str:
            # Every reply so far opened with a header (the opening's own Assistant turn does not).
            statements = sum(m.role == ASSISTANT and m.content.startswith("Action:") for m in request.messages)
            if request.uid % 2 and statements == max_rounds - 1:
                return "Action: Operation\n"
            return self.text(request.task)

    return GroupHeaders(tokenizer, free_format=False)



def run_ours(args) -> dict:
    from bench.bench_rollout import TimedReplies
    from bench.decode_memory import watch_programs
    from cmat_jax.rl.loop import CmatRun
    from cmat_jax.settings.run import parse_run

    class MeasuredRun(CmatRun):
        """The recipe's run, its reply calls timed per role (forced headers on the Assistant's) and its last
        iteration's calls and update rows recorded for the peer."""

        def _reply_sources(self, replies):
            self.sampler = replies.sampler
            self.program_memory = watch_programs(self.sampler)  # printed to stderr as each program compiles
            headers = group_headers(self.tokenizer, self.cmat.rollout.max_rounds)
            self.assistant = TimedReplies(replies, headers, record=True, header_in_reply=True)
            self.reflector = TimedReplies(replies, record=True)
            return dict(assistant=self.assistant, checker=replies, reflector=self.reflector)

        def _update(self, role, batches):
            self.batches.extend(batches)
            return super()._update(role, batches)

        def measure(self) -> list[dict]:
            self.pad_id = self._pad_id()  # of the update rows, for the peer
            for step in range(self.warm_steps):
                self._sft_update(step)
            self.step = self.warm_steps
            measured = []
            for i in range(self.cmat.rl.iterations):
                self.batches = []
                for source in (self.assistant, self.reflector):
                    source.reset()
                compiles = self.sampler.num_compiles
                record = self._iteration()
                stats = self.train_engine.last_stats
                parts = {"assistant_s": stats.assistant_s, "reflection_s": stats.reflection_s,
                         "checker_s": stats.static_checker_s + stats.learned_checker_s, "env_s": stats.env_s}
                parts["other_s"] = record["rollout_s"] - sum(parts.values())
                measured.append(dict(
                    parts, update_s=record["update_s"], rollout_s=record["rollout_s"],
                    rollout_tokens=self.assistant.sampled + self.reflector.sampled,
                    update_tokens=round(record["tokens_per_s"] * record["update_s"]),
                    update_batches=len(self.batches), episodes=stats.episodes, reply_calls=stats.sampler_calls,
                    programs_compiled=self.sampler.num_compiles - compiles, warmup=i < args.warmup_iterations))
            return measured

    with tempfile.TemporaryDirectory() as workdir:
        settings = parse_run(bench_config(args, os.path.join(workdir, "run")))
        run = MeasuredRun(settings)
        try:
            iterations = run.measure()
        finally:
            run.close()
    if args.workload:
        write_workload(args.workload, run, settings)
    measured = [r for r in iterations if not r["warmup"]]
    mean = {k: sum(r[k] for r in measured) / len(measured) for k in (*PARTS, "rollout_s", "rollout_tokens",
                                                                     "update_tokens")}
    return {"iterations": iterations, "mean": mean, "peak_gib": peak_memory_gib(), "programs": run.program_memory,
            "settings": describe(settings), **versions()}


def write_workload(path: str, run, settings) -> None:
    """The last iteration's reply calls and update rows, and the settings the peer's update needs (npz)."""
    import numpy as np

    arrays, calls = {}, []
    for role, source in (("assistant", run.assistant), ("reflection", run.reflector)):
        calls += [(role, call) for call in source.calls]
    for i, (role, call) in enumerate(calls):  # by role: the order of the calls changes no call's time
        arrays[f"call{i}_role"] = np.str_(role)
        arrays[f"call{i}_ids"] = np.concatenate([np.asarray(p, np.int32) for p in call["prompts"]])
        arrays[f"call{i}_lengths"] = np.asarray([len(p) for p in call["prompts"]], np.int32)
        arrays[f"call{i}_new"] = np.asarray(call["new_tokens"], np.int32)
        arrays[f"call{i}_temperature"] = np.float32(call["temperature"])
    for j, batch in enumerate(run.batches):
        for key, value in batch.items():
            arrays[f"batch{j}_{key}"] = value
    meta = {"calls": len(calls), "batches": len(run.batches), "microbatches": settings.train.microbatches,
            "lora_rank": settings.lora.rank, "lora_alpha": settings.lora.alpha,
            "learning_rate": settings.cmat.rl.learning_rate, "clip_eps": settings.cmat.rl.clip_eps,
            "update_epochs": settings.cmat.rl.update_epochs, "max_grad_norm": settings.train.max_grad_norm,
            "dtype": settings.model.dtype, "preset": settings.model.preset, "pad_id": run.pad_id}
    np.savez(path, meta=json.dumps(meta), **arrays)


def describe(settings) -> dict:
    c = settings.cmat
    return {"preset": settings.model.preset, "dtype": settings.model.dtype, "param_dtype": settings.model.param_dtype,
            "remat": settings.model.remat, "lora_rank": settings.lora.rank,
            "tasks_x_samples": f"{c.rollout.tasks_per_iteration}x{c.rollout.group_size}",
            "trials": c.reflection.trials, "checker": c.checker.mode, "max_len": c.rollout.max_len,
            "max_new_tokens": c.rollout.max_new_tokens, "max_rounds": c.rollout.max_rounds,
            "slots": c.rollout.slots or "all", "rl_rows": f"{c.rl.rows}x{c.rl.seq_len}",
            "microbatches": settings.train.microbatches, "warm_start": f"{settings.data.batch_size}x"
            f"{settings.data.seq_len}"}


# -- transformers + PEFT ---------------------------------------------------------------------


def run_peer(args) -> dict:
    """The recorded iteration through transformers + PEFT (see the module docstring)."""
    import numpy as np
    import torch

    from bench.bench_rollout import build_peer_model
    from bench.peer_torch import add_lora, train_mode
    from bench.peer_torch import versions as torch_versions

    data = np.load(args.workload)
    meta = json.loads(str(data["meta"]))
    model = build_peer_model(argparse.Namespace(preset=meta["preset"], dtype=meta["dtype"], seed=args.seed))
    model = add_lora(model, meta["lora_rank"], meta["lora_alpha"])
    device = model.device
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pad = meta["pad_id"]

    def generate(i: int, new_tokens: int = 0) -> int:
        """Reply call i as one generate call (at most `new_tokens` ids when given); returns the ids it sampled."""
        lengths, ids = data[f"call{i}_lengths"], data[f"call{i}_ids"]
        new = new_tokens or int(data[f"call{i}_new"].max())
        longest = int(lengths.max())
        prompt = torch.full((len(lengths), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(prompt)
        for row, (start, length) in enumerate(zip(np.cumsum(lengths) - lengths, lengths)):
            prompt[row, longest - length:] = torch.from_numpy(ids[start:start + length].astype(np.int64))
            mask[row, longest - length:] = 1
        temperature = float(data[f"call{i}_temperature"])
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
            dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(prompt.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                                 min_new_tokens=new, cache_implementation="static", pad_token_id=pad, **sampling)
        return (out.shape[1] - longest) * len(lengths)

    def batch(j: int) -> dict:
        keys = ("tokens", "targets", "loss_mask", "positions", "old_logprobs", "advantages")
        return {k: torch.from_numpy(np.asarray(data[f"batch{j}_{k}"])).to(device) for k in keys}

    optimizer = None

    def update(j: int) -> int:
        """One PPO-clip step on batch j, its rows in the recipe's microbatches; returns its tokens."""
        b = batch(j)
        rows, micro = b["tokens"].shape[0], meta["microbatches"]
        total = b["loss_mask"].sum().clamp(min=1.0)
        eps = meta["clip_eps"]
        for k in range(0, rows, rows // micro):
            part = {key: value[k:k + rows // micro] for key, value in b.items()}
            logits = model(input_ids=part["tokens"].long(), position_ids=part["positions"].long()).logits.float()
            logp = -torch.nn.functional.cross_entropy(logits.flatten(0, 1), part["targets"].long().flatten(),
                                                      reduction="none").view_as(part["loss_mask"])
            ratio = torch.exp(logp - part["old_logprobs"])
            adv = part["advantages"]
            loss = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
            ((loss * part["loss_mask"]).sum() / total).backward()
        if meta["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], meta["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(np.count_nonzero(data[f"batch{j}_segment_ids"]))

    # Warm-up (CUDA context, kernels, allocator), not measured: a short call at the first call's batch, one update.
    start = time.perf_counter()
    generate(0, new_tokens=2)
    optimizer = train_mode(model, meta["learning_rate"])
    if meta["batches"]:
        update(0)
    sync()
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(args.seed)

    times = {"assistant_s": 0.0, "reflection_s": 0.0}
    model.eval()  # in training mode gradient checkpointing would turn the cache off
    sampled = 0
    for i in range(meta["calls"]):
        start = time.perf_counter()
        sampled += generate(i)
        sync()
        times[f"{data[f'call{i}_role']}_s"] += time.perf_counter() - start
    model.train()
    start = time.perf_counter()
    tokens = sum(update(j) for _ in range(meta["update_epochs"]) for j in range(meta["batches"]))
    sync()
    times["update_s"] = time.perf_counter() - start
    return {**times, "rollout_tokens": sampled, "update_tokens": tokens, "warmup_s": warmup_s,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "device": torch.cuda.get_device_name() if cuda else "cpu", **torch_versions()}


# -- report ----------------------------------------------------------------------------------


def table_rows(ours: dict, peer: dict | None) -> list[list]:
    """One row per side: seconds per iteration by part, tokens/s, peak memory; then the ratio."""
    def row(name, r, peak):
        total = sum(r[k] for k in PARTS)
        rollout = total - r["update_s"]
        return [name, *(f"{r[k]:.2f}" for k in PARTS), f"{total:.2f}", f"{r['rollout_tokens'] / rollout:,.0f}",
                f"{r['update_tokens'] / r['update_s']:,.0f}", f"{peak:.1f}" if peak else "n/a"], total

    mean = ours["mean"]
    first, ours_total = row("cmat_jax", mean, ours["peak_gib"])
    rows = [first]
    if peer is not None:
        shared = dict(peer, **{k: mean[k] for k in HOST_PARTS})  # the same host code: cmat_jax's seconds
        second, peer_total = row("transformers + PEFT", shared, peer["peak_gib"])
        rows.append(second)
        model_ours = sum(mean[k] for k in PARTS if k not in HOST_PARTS)
        model_peer = sum(peer[k] for k in PARTS if k not in HOST_PARTS)
        rows.append(["ratio (peer / cmat_jax)", *[""] * len(PARTS), f"{peer_total / ours_total:.2f}x",
                     f"model work {model_peer / model_ours:.2f}x", "", ""])
    return rows


HEADERS = ["side", "assistant s", "reflection s", "Checker s", "environment s", "other rollout s", "update s",
           "iteration s", "rollout tok/s", "update tok/s", "peak GiB"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", required=True, choices=tuple(RECIPES),
                   help="the recipe (configs/cmat_<shape>.py) at its shape with random weights; tiny: the Qwen2.5 "
                   "recipe at the tiny preset (CPU)")
    p.add_argument("--warm-steps", type=int, default=1, help="warm-start SFT steps before the iterations")
    p.add_argument("--warmup-iterations", type=int, default=1, help="iterations that compile, not measured")
    p.add_argument("--iterations", type=int, default=1, help="measured iterations (the peer replays the last)")
    p.add_argument("--train-tasks", type=int, default=64, help="generated training tasks (the warm start's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. rollout.max_rounds=4 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="the peer's sampling seed")
    p.add_argument("--no-peer", action="store_true", help="measure cmat_jax only")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)  # child mode
    p.add_argument("--workload", help=argparse.SUPPRESS)  # the recorded iteration (npz) the peer replays
    args = p.parse_args(argv)
    for name in ("warm_steps", "warmup_iterations"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("iterations", "train_tasks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any("=" not in item for item in args.set):
        p.error(f"--set takes KEY=VALUE, got {next(i for i in args.set if '=' not in i)!r}")
    return args


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.side:
        print(json.dumps(run_ours(args) if args.side == "ours" else run_peer(args)), flush=True)
        return
    with tempfile.TemporaryDirectory() as scratch:
        workload = os.path.join(scratch, "workload.npz")
        me = [sys.executable, os.path.abspath(__file__), *argv, "--workload", workload]
        ours = run_json(me + ["--side", "ours"], timeout=3600)  # first: the peer replays what it recorded
        if "error" in ours:
            raise SystemExit(f"the cmat_jax side failed: {ours['error']}")
        save_json(args, argv, ours, None)  # kept if the peer's side fails or is stopped
        peer = None
        if not args.no_peer:
            peer = run_json(me + ["--side", "peer"], timeout=3600)
            if "error" in peer:
                raise SystemExit(f"the transformers + PEFT side failed: {peer['error']}")
    settings = ours["settings"]
    versions = {k: ours[k] for k in ("jax", "flax", "device")}
    versions.update({k: peer[k] for k in ("torch", "transformers", "peft", "device")} if peer else {})
    print(f"CMAT iteration: shape={args.shape} " + " ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"measured: {args.iterations} iteration(s) after {args.warmup_iterations} warm-up and {args.warm_steps} "
          f"warm-start step(s); peer: the last one replayed; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for i, r in enumerate(ours["iterations"]):
        print(f"  iteration {i + 1}{' (warm-up)' if r['warmup'] else ''}: {r['episodes']} episodes, "
              f"{r['reply_calls']} reply calls, {r['update_batches']} update batches, rollout {r['rollout_s']:.2f} s, "
              f"update {r['update_s']:.2f} s, {r['programs_compiled']} sampler programs compiled")
    print_table(HEADERS, table_rows(ours, peer))
    biggest = max(ours["programs"], key=lambda r: r["temp_gib"] or 0)
    copies = sum(len(r["cache_copies"]) for r in ours["programs"])
    print(f"sampler programs compiled at {len(ours['programs'])} shapes; whole-KV-cache copies in them: {copies}; "
          f"largest temporaries: {biggest['program']} {biggest['temp_gib']:.2f} GiB (cache {biggest['cache_shape']}, "
          f"{biggest['cache_gib']:.2f} GiB)")
    if peer:
        print("Checker, environment and other rollout seconds are host code both sides share: the peer's row "
              "counts cmat_jax's")
    save_json(args, argv, ours, peer)


def save_json(args: argparse.Namespace, argv: list, ours: dict, peer: dict | None) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": shlex.join(["python", "bench/bench_iteration.py", *argv]), "args": vars(args),
                       "cmat_jax": ours, "transformers": peer}, f, indent=2)


if __name__ == "__main__":
    main()
