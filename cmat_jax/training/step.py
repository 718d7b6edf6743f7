"""The train step: one jit-compiled pure function over
(frozen params, LoRA params, optimizer state, batch, step), for any token loss.

The loss is a function (`LossFn`): given the model (frozen base + the adapters
being trained) and one microbatch, it returns the sum of its per-token loss,
the number of loss tokens, and a dict of further per-token sums to report.
`sft_loss` (next-token NLL on the loss mask) is the default; the RL objectives
(cmat_jax/rl/objectives.py) plug in the same way, so SFT and RL share
microbatching, adapter-only gradients, sharding, the non-finite guard and
donation.

Gradients are taken with respect to the LoRA adapters only. A batch of B rows
is split into `microbatches` groups that run one after another under
`lax.scan`, accumulating the summed loss, the reported sums and the summed
gradients; dividing by the total number of loss tokens at the end makes the
result identical to one big batch (a token mean over the whole batch, not a
mean of microbatch means). Each reported sum becomes a token mean the same way.

A step whose loss or gradient norm is not finite leaves adapters and
optimizer state exactly as they were and reports `finite = False`; the loop
then stops or goes on, as configured. NaN never reaches the weights.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cmat_jax.sharding import activation_sharding, constrain
from cmat_jax.training.loss import nll_sum_and_count

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")


def split_microbatches(batch: dict, microbatches: int) -> dict:
    """[B, t] -> [microbatches, B / microbatches, t], microbatch i holding rows i, i+m, i+2m, ...

    Interleaving (rather than contiguous blocks) keeps every device's rows
    spread over all microbatches, so a batch sharded over devices needs no
    data movement to be split.
    """
    def split(x):
        b = x.shape[0]
        return x.reshape(b // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)

    return {k: constrain(split(v), (None, "batch", "seq")) for k, v in batch.items()}


# (model, microbatch, chunk_size, dropout_key) -> (loss sum, loss-token count, {name: per-token sum})
LossFn = Callable[[nnx.Module, dict, Optional[int], Optional[jax.Array]], tuple[jax.Array, jax.Array, dict]]


def sft_loss(model, mb: dict, chunk_size: Optional[int], dropout_key):
    """Next-token negative log-likelihood summed over the loss mask; nothing further reported."""
    h_btd, _ = model.hidden_states(mb["tokens"], mb["positions"], mb["segment_ids"], use_lora=True,
                                   dropout_key=dropout_key)
    total, count = nll_sum_and_count(h_btd, model.output_kernel(), mb["targets"], mb["loss_mask"], chunk_size)
    return total, count, {}


def _loss(lora, frozen, graphdef, mb: dict, chunk_size: Optional[int], dropout_key, loss_fn: LossFn):
    model = nnx.merge(graphdef, lora, frozen)
    total, count, sums = loss_fn(model, mb, chunk_size, dropout_key)
    return total, (count, sums)


def loss_grads_and_metrics(graphdef: nnx.GraphDef, frozen, lora, batch: dict, *, microbatches: int = 1,
                           chunk_size: Optional[int] = None, dropout_key: Optional[jax.Array] = None,
                           loss_fn: LossFn = sft_loss):
    """(token-mean loss, number of loss tokens, d loss / d lora, {name: token mean of each reported sum}).

    Pure and traceable; `batch` holds [B, t] arrays with B divisible by `microbatches`.
    """
    grad_fn = jax.value_and_grad(_loss, has_aux=True)
    mbs = split_microbatches(batch, microbatches)
    one_mb = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), mbs)
    _, (_, sums_shape) = jax.eval_shape(
        lambda l, f, mb: _loss(l, f, graphdef, mb, chunk_size, dropout_key, loss_fn), lora, frozen, one_mb)

    def accumulate(carry, xs):
        grad_sum, loss_sum, count, sums = carry
        mb, index = xs
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
        (loss, (n, mb_sums)), grads = grad_fn(lora, frozen, graphdef, mb, chunk_size, key, loss_fn)
        grad_sum = jax.tree.map(lambda a, g: a + g.astype(a.dtype), grad_sum, grads)
        sums = jax.tree.map(lambda a, s: a + s.astype(jnp.float32), sums, mb_sums)
        return (grad_sum, loss_sum + loss, count + n, sums), None

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), lora)
    init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
            jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), sums_shape))
    (grad_sum, loss_sum, count, sums), _ = jax.lax.scan(accumulate, init, (mbs, jnp.arange(microbatches)))
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grad_sum, lora)
    return loss_sum / denom, count, grads, jax.tree.map(lambda s: s / denom, sums)


def loss_and_grads(graphdef: nnx.GraphDef, frozen, lora, batch: dict, *, microbatches: int = 1,
                   chunk_size: Optional[int] = None, dropout_key: Optional[jax.Array] = None,
                   loss_fn: LossFn = sft_loss):
    """(token-mean loss, number of loss tokens, d loss / d lora) over the whole batch.

    Pure and traceable; `batch` holds [B, t] arrays with B divisible by `microbatches`.
    """
    loss, count, grads, _ = loss_grads_and_metrics(graphdef, frozen, lora, batch, microbatches=microbatches,
                                                   chunk_size=chunk_size, dropout_key=dropout_key, loss_fn=loss_fn)
    return loss, count, grads


def global_norm(tree) -> jax.Array:
    """L2 norm of all leaves together, accumulated in float32."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, schedule: optax.Schedule, *,
                    mesh=None, lora_shardings=None, opt_shardings=None, microbatches: int = 1,
                    chunk_size: Optional[int] = None, dropout_seed: Optional[int] = None,
                    loss_fn: LossFn = sft_loss) -> Callable:
    """The jit-compiled step `(frozen, lora, opt_state, batch, step) -> (lora, opt_state, metrics)`.

    `step` is the 0-based index of this update (an int32 scalar); it sets the
    learning rate and the dropout key. `lora` and `opt_state` are donated.
    `dropout_seed` None means LoRA dropout is off. `loss_fn` is the token loss
    (default: SFT's NLL); `metrics` holds loss, grad_norm, loss_tokens,
    learning_rate, finite, and the token mean of every sum the loss reports.
    """

    def train_step(frozen, lora, opt_state, batch, step):
        with activation_sharding(mesh):
            key = None
            if dropout_seed is not None:
                key = jax.random.fold_in(jax.random.key(dropout_seed), step)
            loss, count, grads, means = loss_grads_and_metrics(
                graphdef, frozen, lora, batch, microbatches=microbatches, chunk_size=chunk_size, dropout_key=key,
                loss_fn=loss_fn)
            grad_norm = global_norm(grads)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            updates, new_opt_state = optimizer.update(grads, opt_state, lora)
            lr = schedule(step)
            new_lora = jax.tree.map(lambda p, u: (p + lr * u).astype(p.dtype), lora, updates)
            # Keep the old state on a non-finite step: nothing NaN is ever stored.
            new_lora = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_lora, lora)
            new_opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_opt_state, opt_state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "loss_tokens": count,
                   "learning_rate": jnp.asarray(lr, jnp.float32), "finite": finite}
        clash = sorted(set(means) & set(metrics))
        if clash:
            raise ValueError(f"the loss function reports {clash}, names the step's own metrics use; rename them")
        metrics.update(means)
        return new_lora, new_opt_state, metrics

    out_shardings = None
    if lora_shardings is not None and opt_shardings is not None:
        out_shardings = (lora_shardings, opt_shardings, None)
    return jax.jit(train_step, donate_argnums=(1, 2), out_shardings=out_shardings)
