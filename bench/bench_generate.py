"""Generation benchmark: cmat_jax's Sampler against transformers' generate, same shapes.

Both sides use random weights at a preset's real shapes, random prompts of one
length, greedy decoding and no EOS, so every row generates exactly
--new-tokens tokens. The transformers peer (PyTorch, SDPA attention) runs in its
own subprocess so the two frameworks never share a device or allocator.

Reported per side: new tokens/s (batch * new tokens / wall time of a warm call),
prefill time (a warm call for one new token), decode step time ((total -
prefill) / (new tokens - 1)) and compile or warm-up time (first call - warm call).
The memory-bandwidth floor is the time to read, once per decode step, every
weight that a step reads plus the keys and values of the filled cache slots
(averaged over the steps), at the bandwidth of a device-to-device copy measured
in the same run.

  python bench/bench_generate.py --preset qwen2_5_1_5b --batch 32 --prompt-len 512 --new-tokens 128
  python bench/bench_generate.py --preset tiny --batch 2 --prompt-len 8 --new-tokens 4 --dtype float32  # smoke

--decode-attention xla,pallas runs the Sampler once per decode attention path (models/decode_attention.py),
one after the other in this process with the same random weights, and reports whether their tokens agree.
Peak device memory is the process's, so only the first path's peak is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import peak_memory_gib  # noqa: E402
from bench.decode_memory import describe, watch_programs  # noqa: E402

PEER_TAG = "PEER_RESULT "
DECODE_ATTENTION_IMPLS = ("xla", "pallas")  # models/decode_attention.py (not imported: JAX loads lazily here)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="qwen2_5_1_5b", help="model preset: qwen2_5_1_5b, codellama_7b, tiny, ...")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--attention-impl", default="auto", choices=("auto", "xla", "cudnn"),
                   help="cmat_jax attention kernel ('auto': cuDNN on GPU for 16-bit compute)")
    p.add_argument("--decode-attention", default="xla",
                   help="comma-separated decode attention paths to run in turn: xla, pallas or xla,pallas")
    p.add_argument("--repeats", type=int, default=3, help="warm calls timed per measurement (median)")
    p.add_argument("--copy-mib", type=int, default=0,
                   help="size of the bandwidth probe; 0 = 1024 MiB on accelerators, 64 MiB on CPU")
    p.add_argument("--unroll-decode-layers", action="store_true",
                   help="decode with the layer loop unrolled over static weight slices (SamplerConfig)")
    p.add_argument("--xla-default-decode", action="store_true",
                   help="compile the decode loop with XLA's default options, not the sampler's GPU decode options")
    p.add_argument("--decode-xla-option", action="append", default=[], metavar="NAME=VALUE",
                   help="an XLA compile option of the decode loop, added to the sampler's (repeatable)")
    p.add_argument("--no-peer", action="store_true", help="skip the transformers peer")
    p.add_argument("--profile", help="trace one warm cmat_jax generate call into this directory "
                   "(summarise with bench/trace_summary.py DIR --steps NEW_TOKENS)")
    p.add_argument("--memory-report", action="store_true",
                   help="report each program's compiled memory and whole-KV-cache copies (bench/decode_memory.py)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # child mode: run transformers
    args = p.parse_args(argv)
    for name in ("batch", "prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.new_tokens < 2:
        p.error("--new-tokens must be >= 2 so that decode steps can be timed apart from prefill")
    if bad := [o for o in args.decode_xla_option if "=" not in o]:
        p.error(f"--decode-xla-option wants NAME=VALUE, got {bad}")
    args.decode_attention = args.decode_attention.split(",")
    if bad := [d for d in args.decode_attention if d not in DECODE_ATTENTION_IMPLS]:
        p.error(f"--decode-attention takes names among {', '.join(DECODE_ATTENTION_IMPLS)}, got {bad}")
    return args


def random_prompts(args, vocab_size: int) -> np.ndarray:
    return np.random.RandomState(0).randint(0, vocab_size, (args.batch, args.prompt_len)).astype(np.int64)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summarize(args, first_s: float, total_s: float, prefill_s: float) -> dict:
    return {
        "new_tokens_per_s": args.batch * args.new_tokens / total_s,
        "step_ms": 1e3 * (total_s - prefill_s) / (args.new_tokens - 1),
        "prefill_ms": 1e3 * prefill_s,
        "compile_s": first_s - total_s,
        "total_s": total_s,
    }


# -- cmat_jax -------------------------------------------------------------------


def decode_xla_options(args) -> dict | None:
    """The SamplerConfig.decode_xla_options that the flags ask for (None = the sampler's own)."""
    import jax

    from cmat_jax.sampling.programs import default_decode_xla_options

    if not args.decode_xla_option:
        return {} if args.xla_default_decode else None
    options = {} if args.xla_default_decode else default_decode_xla_options(jax.default_backend()) or {}
    options.update(o.split("=", 1) for o in args.decode_xla_option)
    return options


def run_jax(args, decode_attention: str) -> tuple[dict, list]:
    """The Sampler's timings with `decode_attention`, and the token ids it generated."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from cmat_jax.models.config import preset
    from cmat_jax.models.transformer import Transformer
    from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy

    cfg = preset(args.preset)
    dtype = jnp.dtype(args.dtype)

    def make():
        return Transformer(cfg, dtype=dtype, param_dtype=dtype, attention_impl=args.attention_impl,
                           decode_attention=decode_attention, rngs=nnx.Rngs(0))

    # Initialise on device in one program rather than parameter by parameter.
    graphdef, _ = nnx.split(nnx.eval_shape(make))
    model = nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())
    # Exact buckets: no padding, so both sides do the same work.
    sampler = Sampler(model, SamplerConfig(batch_buckets=(args.batch,), prompt_buckets=(args.prompt_len,),
                                           new_token_buckets=(args.new_tokens,),
                                           unroll_decode_layers=args.unroll_decode_layers,
                                           decode_xla_options=decode_xla_options(args)))
    prompts = random_prompts(args, cfg.vocab_size).tolist()
    reports = watch_programs(sampler) if args.memory_report else None

    def generate(n):
        return sampler.generate(model, prompts, SamplingPolicy(n, temperature=0.0), eos_ids=())

    start = time.perf_counter()
    result = generate(args.new_tokens)
    first_s = time.perf_counter() - start
    if reports is not None:  # the first call's peak: weights, prefill and decode
        memory = dict(programs=reports, peak_gib=peak_memory_gib(),
                      weights_gib=sum(x.nbytes for x in jax.tree.leaves(nnx.state(model))) / 2**30)
    if any(len(ids) != args.new_tokens for ids in result.token_ids):
        raise RuntimeError("a row generated fewer tokens than requested; the timing would be wrong")
    generate(1)  # same programs (the buckets are fixed); warms the one-token path
    total_s = timed(lambda: generate(args.new_tokens), args.repeats)
    prefill_s = timed(lambda: generate(1), args.repeats)
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        with jax.profiler.trace(args.profile):
            generate(args.new_tokens)
    out = summarize(args, first_s, total_s, prefill_s)
    out["programs_compiled"] = sampler.num_compiles
    if reports is not None:
        out["memory"] = memory
    out["device"] = str(jax.devices()[0].device_kind)
    out.update(bandwidth_floor(args, cfg, model, dtype))
    return out, result.token_ids


def measure_copy_bandwidth(args) -> float:
    """Bytes/s of a device-to-device elementwise copy (read + write), over 10 back-to-back
    copies so that dispatch latency does not count."""
    import jax
    import jax.numpy as jnp

    mib = args.copy_mib or (64 if jax.default_backend() == "cpu" else 1024)
    x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
    copy = jax.jit(lambda x: x + 1.0)
    copy(x).block_until_ready()

    def ten_copies():
        for _ in range(10):
            y = copy(x)
        y.block_until_ready()

    seconds = timed(ten_copies, max(args.repeats, 3)) / 10
    return 2 * x.nbytes / seconds


def bandwidth_floor(args, cfg, model, dtype) -> dict:
    import jax
    from flax import nnx

    bytes_per_value = np.dtype(dtype).itemsize
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
    if not cfg.tie_word_embeddings:  # a step gathers `batch` rows of the input table, not all of it
        weight_bytes -= cfg.vocab_size * cfg.hidden_size * bytes_per_value
    mean_filled = args.prompt_len + args.new_tokens / 2
    kv_bytes = 2 * cfg.num_layers * args.batch * mean_filled * cfg.num_kv_heads * cfg.head_dim * bytes_per_value
    bandwidth = measure_copy_bandwidth(args)
    floor_step_s = (weight_bytes + kv_bytes) / bandwidth
    return {
        "weight_bytes_per_step": int(weight_bytes),
        "kv_bytes_per_step": int(kv_bytes),
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "floor_step_ms": 1e3 * floor_step_s,
        "floor_new_tokens_per_s": args.batch / floor_step_s,
    }


# -- transformers peer -----------------------------------------------------------


def run_peer(args) -> dict:
    import torch
    import transformers

    from cmat_jax.models.config import preset, to_hf_config

    cfg = preset(args.preset)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    hf = to_hf_config(cfg, args.dtype)
    hf.pop("architectures", None)
    config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    ids = torch.from_numpy(random_prompts(args, cfg.vocab_size)).to(device)
    mask = torch.ones_like(ids)

    def generate(n):
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                 eos_token_id=None, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    start = time.perf_counter()
    out = generate(args.new_tokens)
    first_s = time.perf_counter() - start
    if out.shape[1] != args.prompt_len + args.new_tokens:
        raise RuntimeError(f"transformers generated {out.shape[1] - args.prompt_len} tokens, not {args.new_tokens}")
    generate(1)
    total_s = timed(lambda: generate(args.new_tokens), args.repeats)
    prefill_s = timed(lambda: generate(1), args.repeats)
    out = summarize(args, first_s, total_s, prefill_s)
    out["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return out


def run_peer_subprocess(args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--peer", "--preset", args.preset, "--batch", str(args.batch),
           "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--dtype", args.dtype,
           "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(PEER_TAG):
            return json.loads(line[len(PEER_TAG):])
    raise RuntimeError(f"the transformers peer failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


# -- report ------------------------------------------------------------------------


def token_agreement(ours: list, theirs: list) -> dict:
    """How many rows generated the same ids, and the first step at which any row differs (None: none)."""
    steps = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), None) for x, y in zip(ours, theirs)]
    differing = [i for i in steps if i is not None]
    return {"rows_equal": len(steps) - len(differing), "first_difference_step": min(differing, default=None)}


def print_table(args, by_decode: dict, peer: dict | None) -> None:
    """`by_decode`: the Sampler's results per decode attention path, in the order run."""
    first = next(iter(by_decode.values()))
    print(f"\ngeneration: preset={args.preset} batch={args.batch} prompt_len={args.prompt_len} "
          f"new_tokens={args.new_tokens} dtype={args.dtype} greedy, no EOS")
    print(f"device: {first['device']}; copy bandwidth {first['copy_bandwidth_gb_s']:.1f} GB/s; read per decode "
          f"step: {first['weight_bytes_per_step'] / 1e6:.1f} MB weights + {first['kv_bytes_per_step'] / 1e6:.1f} MB "
          f"KV (mean filled slots); cmat_jax compiled {first['programs_compiled']} programs")
    header = f"{'implementation':<27}{'new tok/s':>12}{'step ms':>10}{'prefill ms':>12}{'compile/warm-up s':>19}"
    print(header)
    print("-" * len(header))
    rows = [(f"cmat_jax Sampler ({decode})", ours) for decode, ours in by_decode.items()]
    if peer is not None:
        rows.append(("transformers generate", peer))
    for name, r in rows:
        print(f"{name:<27}{r['new_tokens_per_s']:>12.1f}{r['step_ms']:>10.3f}{r['prefill_ms']:>12.2f}"
              f"{r['compile_s']:>19.2f}")
    print(f"{'bandwidth floor':<27}{first['floor_new_tokens_per_s']:>12.1f}{first['floor_step_ms']:>10.3f}"
          f"{'-':>12}{'-':>19}")
    for decode, ours in by_decode.items():
        if peer is not None:
            print(f"ratio cmat_jax / transformers ({decode}, new tok/s): "
                  f"{ours['new_tokens_per_s'] / peer['new_tokens_per_s']:.2f}x")
        print(f"cmat_jax step time / floor ({decode}): {ours['step_ms'] / ours['floor_step_ms']:.2f}x")
        if "same_tokens_as" in ours:
            print(f"cmat_jax tokens ({decode}) against {ours['same_tokens_as']}'s: {ours['rows_equal']} of "
                  f"{args.batch} rows equal; first difference at step {ours['first_difference_step']}")
    for decode, ours in by_decode.items():
        if "memory" in ours:
            m = ours["memory"]
            print(f"\n{decode} decode attention: weights {m['weights_gib']:.2f} GiB; peak device memory of the "
                  f"process after its first call {m['peak_gib']:.2f} GiB")
            for report in m["programs"]:
                print(describe(report["program"], report))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.peer:
        print(PEER_TAG + json.dumps(run_peer(args)), flush=True)
        return
    # The peer runs first, so its process has exited before JAX claims the device memory.
    peer = None if args.no_peer else run_peer_subprocess(args)
    by_decode, tokens = {}, {}
    for decode in args.decode_attention:
        by_decode[decode], tokens[decode] = run_jax(args, decode)
    first = args.decode_attention[0]
    for decode in args.decode_attention[1:]:
        by_decode[decode].update(same_tokens_as=first, **token_agreement(tokens[decode], tokens[first]))
    print_table(args, by_decode, peer)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cmat_jax": by_decode[first], "cmat_jax_by_decode_attention": by_decode,
                       "transformers": peer}, f, indent=2)


if __name__ == "__main__":
    main()
