"""LoRA train-step benchmark: cmat_jax against transformers + PEFT, same shapes, same run.

    python bench/bench_train.py --preset qwen2_5_1_5b --preset codellama_7b

Each side runs in its own process, one after the other: random weights at the
preset's real shapes, bf16, LoRA rank 16 on all seven projections, AdamW,
batch 8 x 1024 tokens, rematerialisation on. Prints one Markdown table.

FLOPs of a LoRA step (the base is frozen, so no weight gradients):
  forward 2*N*T + backward (input gradients only) 2*N*T = 4*N*T
  + causal attention: forward 2*B*S^2*H*L (QK^T and PV over the lower
    triangle), three times that with its backward;
N = parameters of the matmuls (layers + output projection), T = B*S tokens,
H = heads*head_dim, L = layers. Recomputation under remat is not counted (MFU
counts model FLOPs only). MFU is against H100 SXM's 989 TFLOP/s dense bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import REPO, peak_memory_gib, print_table, run_json, versions  # noqa: E402

H100_BF16_PEAK = 989.4e12


def lora_step_flops(cfg, batch: int, seq_len: int) -> float:
    d, h = cfg.hidden_size, cfg.head_dim
    per_layer = d * h * (cfg.num_heads + 2 * cfg.num_kv_heads) + cfg.num_heads * h * d + 3 * d * cfg.intermediate_size
    n_matmul = cfg.num_layers * per_layer + d * cfg.vocab_size
    tokens = batch * seq_len
    attention_fwd = 2 * batch * seq_len**2 * cfg.num_heads * h * cfg.num_layers
    return 4 * n_matmul * tokens + 3 * attention_fwd


def run_ours(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from cmat_jax.models.lora import LoRA
    from cmat_jax.settings.model import LoraSettings, MeshSettings, ModelSettings
    from cmat_jax.training import build
    from cmat_jax.training.config import default_config
    from cmat_jax.training.optimizer import make_optimizer, make_schedule
    from cmat_jax.training.step import make_train_step

    c = default_config()
    c.model.preset = args.preset
    c.model.random_init = True
    c.model.dtype = c.model.param_dtype = "bfloat16"
    c.model.remat = args.remat
    c.lora.rank, c.lora.alpha = 16, 32.0
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = args.data, args.fsdp, args.tensor
    mesh = build.make_mesh(MeshSettings.parse(c))
    model = build.build_model(ModelSettings.parse(c), LoraSettings.parse(c), c.seed, mesh)
    cfg = model.cfg
    graphdef, lora, frozen = nnx.split(model, LoRA, ...)
    del model
    lora = jax.tree.map(lambda x: x.astype(jnp.float32), lora)
    optimizer = make_optimizer(weight_decay=0.0, max_grad_norm=1.0)
    opt_state = jax.jit(optimizer.init)(lora)
    schedule = make_schedule(peak_lr=1e-4, total_steps=10_000)
    step_fn = make_train_step(graphdef, optimizer, schedule, mesh=mesh,
                              chunk_size=args.loss_chunk or None, microbatches=args.microbatches)
    rng = np.random.RandomState(0)
    b, t = args.batch, args.seq_len
    tokens = rng.randint(0, cfg.vocab_size, (b, t + 1)).astype(np.int32)
    batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((b, t), np.float32),
             "segment_ids": np.ones((b, t), np.int32), "positions": np.broadcast_to(np.arange(t, dtype=np.int32),
                                                                                     (b, t)).copy()}
    batch = jax.device_put(batch)
    step0 = jnp.zeros((), jnp.int32)
    t0 = time.perf_counter()
    compiled = step_fn.lower(frozen, lora, opt_state, batch, step0).compile()
    compile_s = time.perf_counter() - t0
    for i in range(args.warmup):
        lora, opt_state, metrics = compiled(frozen, lora, opt_state, batch, jnp.asarray(i, jnp.int32))
    float(metrics["loss"])
    t0 = time.perf_counter()
    for i in range(args.steps):
        lora, opt_state, metrics = compiled(frozen, lora, opt_state, batch, jnp.asarray(i, jnp.int32))
    loss = float(metrics["loss"])
    dt = (time.perf_counter() - t0) / args.steps
    return {"step_s": dt, "tokens_per_s": b * t / dt, "compile_s": compile_s, "peak_gib": peak_memory_gib(),
            "loss": loss, "flops": lora_step_flops(cfg, b, t), **versions()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append", help="model shape (repeatable); default: both issue shapes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--remat", default="save_linear")
    parser.add_argument("--loss-chunk", type=int, default=256)
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--data", type=int, default=1, help="mesh size of the data axis")
    parser.add_argument("--fsdp", type=int, default=-1, help="mesh size of the fsdp axis (-1: the rest)")
    parser.add_argument("--tensor", type=int, default=1, help="mesh size of the tensor axis")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-peer", action="store_true", help="measure cmat_jax only")
    parser.add_argument("--side", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help="also write the results as JSON here")
    args = parser.parse_args()
    presets = args.preset or ["qwen2_5_1_5b", "codellama_7b"]

    if args.side == "ours":
        args.preset = presets[0]
        print(json.dumps(run_ours(args)))
        return

    ceilings = run_json([sys.executable, "-c", "import json; from bench.common import device_ceilings; "
                                               "print(json.dumps(device_ceilings()))"])
    results = []
    for name in presets:
        common = ["--preset", name, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
                  "--warmup", str(args.warmup), "--steps", str(args.steps)]
        ours = run_json([sys.executable, os.path.join(REPO, "bench", "bench_train.py"), "--side", "ours",
                         "--remat", args.remat, "--loss-chunk", str(args.loss_chunk),
                         "--microbatches", str(args.microbatches), "--data", str(args.data),
                         "--fsdp", str(args.fsdp), "--tensor", str(args.tensor)] + common)
        peer = {} if args.no_peer else run_json(
            [sys.executable, os.path.join(REPO, "bench", "peer_torch.py"), "train"] + common)
        results.append({"preset": name, "ours": ours, "peer": peer})

    rows = []
    for r in results:
        o, p = r["ours"], r["peer"]
        if "error" in o:
            rows.append([r["preset"], "cmat_jax failed: " + o["error"].strip().splitlines()[-1][:80]] + [""] * 7)
            continue
        ratio = f"{o['tokens_per_s'] / p['tokens_per_s']:.2f}x" if p.get("tokens_per_s") else "n/a"
        mem_ratio = f"{o['peak_gib'] / p['peak_gib']:.2f}x" if p.get("peak_gib") else "n/a"
        rows.append([
            r["preset"], f"{args.batch}x{args.seq_len}", f"{o['tokens_per_s']:,.0f}",
            f"{p['tokens_per_s']:,.0f}" if p.get("tokens_per_s") else p.get("error", "skipped").strip().splitlines()[-1][:60], ratio,
            f"{o['flops'] / o['step_s'] / H100_BF16_PEAK:.1%}", f"{o['peak_gib']:.1f} / "
            + (f"{p['peak_gib']:.1f}" if p.get("peak_gib") else "n/a") + f" ({mem_ratio})",
            f"{o['compile_s']:.1f}", f"{p['first_step_s']:.1f}" if p.get("first_step_s") else "n/a",
        ])
    print(f"device ceilings (JAX, same run): {json.dumps(ceilings)}")
    print(f"cmat_jax: {json.dumps({k: results[0]['ours'].get(k) for k in ('jax', 'flax', 'device')})}  "
          f"peer: {json.dumps({k: results[0]['peer'].get(k) for k in ('torch', 'transformers', 'peft')})}")
    print(f"remat={args.remat} loss_chunk={args.loss_chunk} microbatches={args.microbatches} "
          f"mesh data={args.data} fsdp={args.fsdp} tensor={args.tensor}")
    print_table(["shape", "batch", "cmat_jax tok/s", "peer tok/s", "ratio", "cmat_jax MFU", "peak GiB ours / peer",
                 "compile s", "peer first step s"], rows)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"ceilings": ceilings, "results": results, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
