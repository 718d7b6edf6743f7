"""AdamW over the LoRA adapters, with a warmup + decay learning-rate schedule.

The learning rate is applied by the train step from the global step number,
not through optax's own update counter: a skipped (non-finite) update leaves
the optimizer state untouched, and the schedule must still follow the step
number that metrics and checkpoints report.
"""

from __future__ import annotations

import optax

from cmat_jax.settings.training import DECAYS


def make_schedule(*, peak_lr: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine",
                  end_lr_ratio: float = 0.0) -> optax.Schedule:
    """Learning rate of the update made at step index i (0-based).

    Linear warmup up to `peak_lr` over `warmup_steps` (capped at `total_steps`,
    so a short smoke-test run keeps its config), then `decay` down to
    `peak_lr * end_lr_ratio` at `total_steps`.
    """
    if decay not in DECAYS:
        raise ValueError(f"train.decay is {decay!r}; choose from {', '.join(DECAYS)}")
    if total_steps <= 0:
        raise ValueError(f"train.steps must be positive, found {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"train.warmup_steps must be >= 0, found {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    if peak_lr <= 0:
        raise ValueError(f"train.learning_rate must be positive, found {peak_lr}")
    if not 0.0 <= end_lr_ratio <= 1.0:
        raise ValueError(f"train.end_lr_ratio is {end_lr_ratio}; expected a value in [0, 1]")
    end_lr = peak_lr * end_lr_ratio
    decay_steps = max(total_steps - warmup_steps, 1)
    if decay == "cosine":
        after = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_lr_ratio)
    elif decay == "linear":
        after = optax.linear_schedule(peak_lr, end_lr, decay_steps)
    else:
        after = optax.constant_schedule(peak_lr)
    if warmup_steps == 0:
        return after
    # Warmup reaches peak_lr at its last step, so the first update is not made at lr 0.
    warmup = optax.linear_schedule(peak_lr / warmup_steps, peak_lr, warmup_steps - 1) if warmup_steps > 1 \
        else optax.constant_schedule(peak_lr)
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(*, weight_decay: float = 0.0, max_grad_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW at unit learning rate (the step scales by the schedule).

    Only adapters are ever given to this optimizer, so weight decay applies to
    adapters alone. `max_grad_norm <= 0` disables clipping.
    """
    if weight_decay < 0:
        raise ValueError(f"train.weight_decay must be >= 0, found {weight_decay}")
    parts = []
    if max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    # adamw(learning_rate=1.0) yields -(adam_update + weight_decay * param); the
    # step multiplies it by schedule(step).
    parts.append(optax.adamw(learning_rate=1.0, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)
