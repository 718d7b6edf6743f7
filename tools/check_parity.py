"""Compare cmat_jax with Hugging Face transformers on one model.

    python tools/check_parity.py --hf-dir DIR [--against PATH] [--generate N]

The reference is DIR loaded with transformers (PyTorch, CPU, float32). The
candidate is cmat_jax loading PATH (another Hugging Face directory such as an
export, or a cmat_jax training workdir, rebuilt in float32 with exact
attention whatever the run trained with: compare it with an export written
with `--dtype float32`), or DIR itself. Both run the same
random token batch, whose last row is left-padded. The report names the first
layer whose outputs diverge and ends with the max absolute logit difference;
the exit status is 1 above the tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _reference_model(hf_dir: str):
    """transformers model for DIR; original-Qwen checkpoints are rebuilt as the
    Qwen2 model they are equivalent to (transformers has no QWen class)."""
    import torch
    import transformers

    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        raw = json.load(f)
    if raw.get("model_type") != "qwen":
        return transformers.AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    from safetensors.torch import load_file

    from cmat_jax.checkpoints.safetensors_io import SafetensorsDir

    cfg = transformers.Qwen2Config(
        vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"] // 2, num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"], num_key_value_heads=raw["num_attention_heads"],
        rope_theta=float(raw.get("rotary_emb_base", 10000.0)), rms_norm_eps=raw.get("layer_norm_epsilon", 1e-6),
        max_position_embeddings=raw.get("seq_length", 2048), tie_word_embeddings=False,
    )
    tensors = SafetensorsDir(hf_dir)
    files = {tensors.file_of(n) for n in tensors.names}
    src = {}
    for path in files:
        src.update(load_file(path))
    d = raw["hidden_size"]
    sd = {"model.embed_tokens.weight": src["transformer.wte.weight"], "model.norm.weight": src["transformer.ln_f.weight"],
          "lm_head.weight": src["lm_head.weight"]}
    for i in range(raw["num_hidden_layers"]):
        h, m = f"transformer.h.{i}.", f"model.layers.{i}."
        sd[m + "input_layernorm.weight"] = src[h + "ln_1.weight"]
        sd[m + "post_attention_layernorm.weight"] = src[h + "ln_2.weight"]
        for j, p in enumerate("qkv"):
            sd[m + f"self_attn.{p}_proj.weight"] = src[h + "attn.c_attn.weight"][j * d:(j + 1) * d]
            sd[m + f"self_attn.{p}_proj.bias"] = src[h + "attn.c_attn.bias"][j * d:(j + 1) * d]
        sd[m + "self_attn.o_proj.weight"] = src[h + "attn.c_proj.weight"]
        sd[m + "mlp.gate_proj.weight"] = src[h + "mlp.w2.weight"]
        sd[m + "mlp.up_proj.weight"] = src[h + "mlp.w1.weight"]
        sd[m + "mlp.down_proj.weight"] = src[h + "mlp.c_proj.weight"]
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model


def _candidate_model(path: str):
    import jax.numpy as jnp

    from cmat_jax.checkpoints.hf import load_hf_model

    if os.path.isdir(os.path.join(path, "checkpoints")):  # a training workdir
        from cmat_jax.training.workdir import load_trained_model

        model, _, _ = load_trained_model(path, exact_math=True)
        return model
    return load_hf_model(path, dtype=jnp.float32, param_dtype=jnp.float32, attention_impl="xla")


def _reference_run(model, tokens, mask):
    """Logits and each decoder layer's output, via forward hooks."""
    import torch

    outputs = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for layer in model.model.layers]
    try:
        with torch.no_grad():
            logits = model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask)).logits
    finally:
        for h in hooks:
            h.remove()
    return logits.float().numpy(), [o.float().numpy() for o in outputs]


def _candidate_run(model, tokens, mask, positions):
    import jax.numpy as jnp

    h, _, layers = model.hidden_states(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask),
                                       collect_layers=True)
    return np.asarray(model.logits(h)), list(np.asarray(layers))


def _token_batch(vocab: int, batch: int, length: int, seed: int):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, vocab, (batch, length)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[-1, : max(1, length // 3)] = 0  # a left-padded row
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    return tokens, mask, positions


def _compare_generation(ref, cand, tokens, mask, n: int) -> bool:
    import torch

    from cmat_jax.sampling import greedy_generate

    with torch.no_grad():
        ref_out = ref.generate(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
                               max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                               eos_token_id=None).numpy()[:, tokens.shape[1]:]
    prompts = [list(row[m.astype(bool)]) for row, m in zip(tokens, mask)]
    ours = greedy_generate(cand, prompts, n)
    ok = True
    for row, (r, c) in enumerate(zip(ref_out, ours)):
        c = list(c)[:n]
        diverge = next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), None)
        if diverge is None and len(c) == n:
            print(f"generate row {row}: {n} greedy tokens identical")
        else:
            ok = False
            at = diverge if diverge is not None else len(c)
            print(f"generate row {row}: first divergence at new token {at}: "
                  f"transformers {list(r[at:at + 3])} vs cmat_jax {c[at:at + 3]}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-dir", required=True, help="reference Hugging Face model directory")
    parser.add_argument("--against", help="candidate: HF directory or cmat_jax training workdir (default: --hf-dir)")
    parser.add_argument("--generate", type=int, default=0, metavar="N", help="also compare N greedy tokens")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance on float32 logits (default 1e-4)")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("batch", "length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.generate < 0:
        parser.error(f"--generate must be >= 0, got {args.generate}")

    from cmat_jax.models.config import load_hf_config

    try:
        cfg, _ = load_hf_config(args.hf_dir)
        ref = _reference_model(args.hf_dir)
        cand = _candidate_model(args.against or args.hf_dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tokens, mask, positions = _token_batch(cfg.vocab_size, args.batch, args.length, args.seed)
    ref_logits, ref_layers = _reference_run(ref, tokens, mask)
    cand_logits, cand_layers = _candidate_run(cand, tokens, mask, positions)
    valid = mask.astype(bool)

    first_bad = None
    for i, (r, c) in enumerate(zip(ref_layers, cand_layers)):
        # Hidden states grow with depth; judge each layer relative to its scale.
        diff = float(np.abs(r - c)[valid].max())
        scale = max(1.0, float(np.abs(r[valid]).max()))
        print(f"layer {i:3d}: max abs diff {diff:.3e} (scale {scale:.3g})")
        if first_bad is None and diff > args.atol * scale:
            first_bad = i
    logit_diff = float(np.abs(ref_logits - cand_logits)[valid].max())
    ok = logit_diff <= args.atol
    if args.generate:
        ok = _compare_generation(ref, cand, tokens, mask, args.generate) and ok
    if first_bad is not None:
        print(f"first diverging layer: {first_bad}")
    elif not ok:
        print("layers agree; the difference arises in the final norm or the output projection")
    print(f"max abs logit diff: {logit_diff:.3e} (tolerance {args.atol:g}) -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
