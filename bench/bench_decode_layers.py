"""One decode step (batch B, cache of 640 slots, 576 filled) under several ways of
running the stacked layers, random bf16 weights at a preset's shape:

  scan                lax.scan over the stacked weights (Transformer's default)
  static_slices       a Python loop over static slices of the stacked weights
                      (Transformer(..., unroll_layers=True))
  per_layer_buffers   a Python loop over weights copied into one buffer per layer

and "+cublas" after a name compiles it with XLA's Triton GEMMs off (cuBLAS
instead) and dynamic-slice fusion on, which lets cuBLAS read a layer's slice of
the stacked weights in place; "+no_dot_merger" also turns off XLA's pass that
merges GEMMs sharing an input (it concatenates their weights).

XLA keeps GEMM autotuning results for the life of the process, so a variant's
compile time depends on what ran before it: run one variant per process when
compile times matter.

    python bench/bench_decode_layers.py --preset codellama_7b --batch 32
    python bench/bench_decode_layers.py --preset qwen2_5_1_5b --profile /tmp/traces

Prints each variant's step time and compile time, then one JSON line. With
--profile DIR, five steps of each variant are traced into DIR/<variant>
(read them with `python bench/trace_summary.py DIR/<variant> --steps 5`).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from cmat_jax.models import attention as attn_lib  # noqa: E402
from cmat_jax.models.config import preset  # noqa: E402
from cmat_jax.models.kv_cache import KVCache  # noqa: E402
from cmat_jax.models.layers import rope_inv_freq, rope_sin_cos  # noqa: E402
from cmat_jax.models.transformer import Transformer  # noqa: E402

LOOPS = ("scan", "static_slices", "per_layer_buffers")
OPTIONS = {"cublas": {"xla_gpu_enable_triton_gemm": False, "xla_gpu_enable_dynamic_slice_fusion": True},
           "no_dot_merger": {"xla_disable_hlo_passes": "dot-merger"}}
VARIANTS = ("scan", "scan+cublas", "static_slices", "static_slices+cublas", "per_layer_buffers")

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="codellama_7b")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--variants", default=",".join(VARIANTS),
               help=f"comma-separated LOOP[+OPTION...], LOOP one of {LOOPS}, OPTION one of {tuple(OPTIONS)}")
p.add_argument("--profile", help="trace five steps of each variant into this directory")
p.add_argument("--dump-hlo", help="write each variant's optimised HLO into this directory")
args = p.parse_args()
variants = args.variants.split(",")
for v in variants:
    loop, *opts = v.split("+")
    if loop not in LOOPS or set(opts) - set(OPTIONS):
        p.error(f"variant {v!r}: want LOOP[+OPTION...] with LOOP in {LOOPS} and OPTION in {tuple(OPTIONS)}")

B, S, FILL = args.batch, 640, 576
cfg = preset(args.preset)
mk = lambda: Transformer(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention_impl="auto",  # noqa: E731
                         rngs=nnx.Rngs(0))
graphdef, _ = nnx.split(nnx.eval_shape(mk))
state = jax.jit(lambda: nnx.state(mk()))()
model = nnx.merge(graphdef, state)


def step_scan(state, tok, cache):
    return nnx.merge(graphdef, state)(tok, cache=cache)


def step_unrolled(state, tok, cache):
    return nnx.merge(graphdef, state)(tok, cache=cache, unroll_layers=True)


def step_layers(state, layers, tok, cache):
    """The decode step written out around one weight buffer per layer."""
    m = nnx.merge(graphdef, state)
    write_index = cache.end_index
    pos = jnp.full((B, 1), write_index, jnp.int32)
    seg = jnp.ones((B, 1), jnp.int32)
    kv_seg = jax.lax.dynamic_update_slice(cache.segment_ids_bs, seg, (0, write_index))
    mask = attn_lib.attention_mask(seg, pos, kv_seg)
    sin, cos = rope_sin_cos(pos, rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_factor))
    x = m.embed(tok, jnp.bfloat16)
    kv = (cache.k_lbskh, cache.v_lbskh)
    block_graphdef = nnx.graphdef(m.blocks)
    for i, layer_state in enumerate(layers):
        x, kv = nnx.merge(block_graphdef, layer_state)(x, sin, cos, mask, (*kv, i), write_index, use_lora=False,
                                                       dropout_key=None)
    return m.logits(m.final_norm(x)), KVCache(kv[0], kv[1], kv_seg, write_index + 1)


def build(label):
    """(jitted step, extra leading args) of one variant."""
    loop, *opts = label.split("+")
    options = {}
    for opt in opts:
        options.update(OPTIONS[opt])
    if loop == "per_layer_buffers":
        block_state = nnx.state(model.blocks)
        layers = jax.jit(lambda s: [jax.tree.map(lambda a: a[i], s) for i in range(cfg.num_layers)])(block_state)
        fn, extra = step_layers, (layers,)
    else:
        fn, extra = (step_unrolled if loop == "static_slices" else step_scan), ()
    return jax.jit(fn, donate_argnames=("cache",), compiler_options=options or None), extra


def run_steps(f, extra, tok, cache, n):
    for _ in range(n):
        cache = KVCache(cache.k_lbskh, cache.v_lbskh, cache.segment_ids_bs, jnp.asarray(FILL, jnp.int32))
        logits, cache = f(state, *extra, tok, cache)
    logits.block_until_ready()
    return cache


tok = jnp.ones((B, 1), jnp.int32)
results = {}
for label in variants:
    f, extra = build(label)
    cache = KVCache.init(cfg, B, S, jnp.bfloat16)
    cache = KVCache(cache.k_lbskh, cache.v_lbskh, jnp.ones((B, S), jnp.int32).at[:, FILL:].set(0),
                    jnp.asarray(FILL, jnp.int32))
    t0 = time.perf_counter()
    cache = run_steps(f, extra, tok, cache, 1)
    compile_s = time.perf_counter() - t0
    if args.dump_hlo:
        os.makedirs(args.dump_hlo, exist_ok=True)
        with open(os.path.join(args.dump_hlo, label.replace("+", "_") + ".hlo.txt"), "w") as fh:
            fh.write(f.lower(state, *extra, tok, cache).compile().as_text())
    cache = run_steps(f, extra, tok, cache, 3)
    n = 20
    t0 = time.perf_counter()
    cache = run_steps(f, extra, tok, cache, n)
    results[label] = {"step_ms": (time.perf_counter() - t0) / n * 1e3, "compile_s": compile_s}
    if args.profile:
        trace_dir = os.path.join(args.profile, label.replace("+", "_"))
        os.makedirs(trace_dir, exist_ok=True)
        with jax.profiler.trace(trace_dir):
            cache = run_steps(f, extra, tok, cache, 5)
    print(label, results[label], flush=True)
    del f, extra, cache
print(json.dumps({"preset": args.preset, "batch": B, **results}))
