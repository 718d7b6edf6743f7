"""Typed settings: a run's or an evaluation's ConfigDict, parsed once at the entry point into frozen
dataclasses, one per concern, each checking its own fields.

    run.py         parse_run(config) -> RunSettings (python -m cmat_jax.train, modes sft and cmat)
    model.py       model.*, lora.*, mesh.*
    training.py    train.* (optimizer, schedule, step; a CMAT warm start's demonstration shares), data.*,
                   checkpoint.*
    rollout.py     rollout.*, reflection.*, checker.*; EngineSettings, what one rollout engine reads
    cmat.py        tasks.*, rl.*, and CmatSettings, which checks how the CMAT sections combine
    evaluation.py  EvalSettings (python -m cmat_jax.evaluate; fields and defaults: cmat_jax/eval_config.py)
    fields.py      the checks and the error format: one line naming the field, the value and what is accepted

The package sits low in the layers: it imports models/config.py (the presets) and nothing else of cmat_jax,
so every layer above may read settings.
"""
