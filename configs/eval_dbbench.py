"""DBBench evaluation through the batched rollout engine, on the 60 dev tasks shipped with the package.

    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=oracle
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.hf_dir=DIR
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.workdir=W
    python -m cmat_jax.evaluate --config configs/eval_dbbench.py --config.agent=model --config.model.preset=tiny \
        --config.ablations=true

Every field, its default and what is refused: cmat_jax/eval_config.py. The
variant: --config.reflection.trials=N (1 = no reflection), --config.reflection.omega,
--config.checker=off|static|learned|static+learned.
"""

from cmat_jax.eval_config import default_config


def get_config():
    return default_config()
