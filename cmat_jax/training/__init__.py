"""LoRA supervised fine-tuning: optimizer, chunked loss, the jit-compiled step,
orbax checkpoints and the training loop."""
