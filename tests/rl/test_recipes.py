"""The real-model CMAT recipes (configs/cmat_qwen_1_8b.py, cmat_qwen2_5_1_5b.py, cmat_codellama_7b.py) stay valid.

Each parses as written (with a model directory, or as the random-weights run of its real shape that
bench/bench_iteration.py measures), and runs on CPU at the tiny preset (bench_iteration.shrink_to_tiny: the
recipe's precision, remat and microbatches kept, counts and lengths cut) through its warm start, its first
CMAT iteration and the evaluations around it. A key the settings do not read fails both.
"""

import math

import pytest

from bench.bench_iteration import RECIPES, shrink_to_tiny
from cmat_jax.settings.fields import SettingError
from cmat_jax.settings.run import parse_run
from tests.repo_configs import config_module, run_cmat

SHAPES = [shape for shape in RECIPES if shape != "tiny"]


@pytest.mark.parametrize("shape", SHAPES)
def test_recipe_parses_with_a_model_directory_and_as_random_weights_of_its_shape(shape, tmp_path):
    c = config_module(RECIPES[shape]).get_config()
    c.model.hf_dir = str(tmp_path / "model")
    settings = parse_run(c)
    rollout = settings.cmat.rollout
    assert (rollout.tasks_per_iteration, rollout.group_size) == (16, 8)  # the iteration bench_iteration.py measures
    assert settings.cmat.reflection.trials == 2 and settings.cmat.checker.mode == "static"
    assert rollout.max_len >= 2048 and settings.cmat.rl.seq_len >= rollout.max_len
    assert settings.model.dtype == settings.model.param_dtype == "bfloat16"

    c.model.hf_dir, c.model.random_init = "", True
    random = parse_run(c)
    assert random.model.preset == shape and random.model.random_init

    c.model.preset = shape + "x"
    with pytest.raises(SettingError, match=r"^model\.preset: unknown model preset"):
        parse_run(c)


@pytest.mark.parametrize("shape", SHAPES)
def test_recipe_runs_its_first_iteration_at_the_tiny_shape(shape, tmp_path):
    c = config_module(RECIPES[shape]).get_config()
    shrink_to_tiny(c)
    c.workdir = str(tmp_path / "run")
    _, records = run_cmat(c)
    assert [(r["phase"], r["iteration"]) for r in records] == [("sft", 0), ("eval", 0), ("rl", 1), ("eval", 1)]
    for record in records:
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        assert all(math.isfinite(v) for v in numbers.values()), record
    assert records[2]["rollout_s"] > 0 and records[2]["update_s"] > 0
