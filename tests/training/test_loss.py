"""The SFT loss: chunking changes nothing, and the training loss is exactly the
mean NLL of the assistant-generated tokens (computed here independently)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cmat_jax.data import load_tokenizer
from cmat_jax.settings.run import parse_run
from cmat_jax.training.loss import nll_sum_and_count, token_mean_loss
from cmat_jax.training.trainer import Trainer
from tests.training.common import CONVERSATIONS, tiny_config


@pytest.mark.parametrize("chunk", [1, 3, 7, 10, 64])
def test_chunked_loss_and_grad_equal_unchunked(chunk):
    rng = np.random.default_rng(0)
    b, t, d, v = 3, 10, 16, 50
    h = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    mask = jnp.asarray(rng.random((b, t)) < 0.6, jnp.float32)

    def loss(h, chunk_size):
        return token_mean_loss(h, kernel, targets, mask, chunk_size)

    full, full_grad = jax.value_and_grad(loss)(h, None)
    chunked, chunked_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)(h, chunk)
    np.testing.assert_allclose(chunked, full, rtol=1e-6)
    np.testing.assert_allclose(chunked_grad, full_grad, rtol=1e-5, atol=1e-7)
    # And both equal the plain definition.
    logp = jax.nn.log_softmax(jnp.einsum("btd,dv->btv", h, kernel), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(full, jnp.sum(nll * mask) / jnp.sum(mask), rtol=1e-6)


def test_masked_positions_contribute_nothing_even_when_non_finite():
    h = jnp.ones((1, 4, 2), jnp.float32).at[0, 3].set(jnp.inf)
    kernel = jnp.eye(2, dtype=jnp.float32)
    targets = jnp.zeros((1, 4), jnp.int32)
    mask = jnp.asarray([[1, 1, 0, 0]], jnp.float32)
    total, count = nll_sum_and_count(h, kernel, targets, mask, chunk_size=2)
    assert np.isfinite(total) and count == 2
    np.testing.assert_allclose(total, 2 * np.log(2.0), rtol=1e-6)


def _assistant_flags(tokenizer, conversation):
    """Token ids of a ChatML conversation built piece by piece, with 1 on exactly the
    tokens the assistant generates (its reply and the <|im_end|> closing it)."""
    pieces = []
    if conversation[0][0] != "system":
        pieces.append(("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", 0))
    for role, content in conversation:
        if role == "assistant":
            pieces += [("<|im_start|>assistant\n", 0), (content + "<|im_end|>", 1), ("\n", 0)]
        else:
            pieces.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", 0))
    ids, flags = [], []
    for text, flag in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        flags += [flag] * len(piece)
    return ids, flags


def test_training_loss_is_mean_nll_of_assistant_tokens(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{
        "data.batch_size": 2, "data.seq_len": 96, "train.steps": 1, "train.loss_chunk_size": 16})
    trainer = Trainer(parse_run(config))
    tokenizer = load_tokenizer(None)
    known = {tuple(ids): flags for ids, flags in (_assistant_flags(tokenizer, c) for c in CONVERSATIONS)}

    # The batch the first step will see (the iterator is rewound afterwards).
    start = trainer.batches.state()
    batch = next(trainer.batches)
    trainer.batches.restore(start)
    assert (batch["segment_ids"] == 0).any(), "the test batch should contain padding"

    model = nnx.merge(trainer.graphdef, jax.tree.map(jnp.copy, trainer.lora), trainer.frozen)
    nlls = []
    for row in range(batch["tokens"].shape[0]):
        for segment in set(batch["segment_ids"][row].tolist()) - {0}:
            where = batch["segment_ids"][row] == segment
            ids = list(batch["tokens"][row, where]) + [int(batch["targets"][row, where][-1])]
            flags = known[tuple(int(i) for i in ids)]  # the conversation this segment holds
            # Each conversation alone, from position 0: packing must not change its logits.
            logits = np.asarray(model(jnp.asarray([ids[:-1]], jnp.int32))[0][0], np.float64)
            logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                          keepdims=True)) - logits.max(-1, keepdims=True)
            for position in range(len(ids) - 1):
                if flags[position + 1]:
                    nlls.append(-logp[position, ids[position + 1]])
    expected = float(np.mean(nlls))

    history = trainer.train()
    trainer.close()
    assert history[0]["loss_tokens"] == len(nlls)
    np.testing.assert_allclose(history[0]["loss"], expected, rtol=1e-5)
