"""The PyTorch peer of bench_train.py: a transformers + PEFT LoRA train step on the same shapes.

Run by bench_train.py in its own process (one framework per process, so the
two never share GPU memory):

    python bench/peer_torch.py train --preset qwen2_5_1_5b --batch 8 --seq-len 1024

Random weights at the preset's real shapes, bf16, SDPA attention. Prints one
JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_model(preset_name: str, lora_rank: int):
    import torch
    import transformers

    from cmat_jax.models.config import preset, to_hf_config

    hf_config = transformers.AutoConfig.for_model(**to_hf_config(preset(preset_name), "bfloat16"))
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config, torch_dtype=torch.bfloat16)
    return add_lora(model, lora_rank, 2 * lora_rank) if lora_rank else model


def add_lora(model, rank: int, alpha: float):
    """PEFT LoRA adapters of `rank` on all seven projections, as cmat_jax's default targets."""
    import peft

    lora = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"])
    return peft.get_peft_model(model, lora)


def train_mode(model, learning_rate: float):
    """The model set up for LoRA training (non-reentrant gradient checkpointing) and AdamW over its adapters."""
    import torch

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0)


def bench_train(args) -> dict:
    import torch

    model = build_model(args.preset, args.lora_rank)
    opt = train_mode(model, 1e-4)
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(0)
    tokens = torch.randint(0, vocab, (args.batch, args.seq_len), device="cuda", generator=gen)

    def step():
        out = model(input_ids=tokens, labels=tokens)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    t0 = time.perf_counter()
    step().item()
    first = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    return {"step_s": dt, "tokens_per_s": args.batch * args.seq_len / dt, "first_step_s": first,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def versions() -> dict:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train"])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    result = bench_train(args)
    result.update(versions())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
