"""Evaluation with a model agent: the tiny preset end to end with ablations, an SFT run's workdir, a Hugging
Face directory, refusals."""

import json
import os
import shutil

import pytest

from cmat_jax import evaluate
from cmat_jax.agents.memory import MEMORY_HEADER, render_memory
from cmat_jax.agents.trajectory import REFLECTION_ROLE, STATUSES, Trajectory
from cmat_jax.data.tokenizer import bundled_tokenizer_dir, decode_ids, end_of_turn_ids, load_tokenizer
from cmat_jax.settings.run import parse_run
from cmat_jax.training.trainer import Trainer
from tests.repo_configs import config_module
from tests.training.common import tiny_config


eval_dbbench = config_module("eval_dbbench")


def tiny_eval_config(workdir, **overrides):
    """The tiny preset on the first 3 dev tasks, with short replies so the test stays fast."""
    config = eval_dbbench.get_config()
    config.agent = "model"
    config.model.preset = "tiny"
    config.workdir = str(workdir)
    config.max_tasks = 3
    config.sampling.max_new_tokens = 12
    config.sampling.max_len = 1024
    config.reflection.max_new_tokens = 6
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def without_reflections(trajectory):
    record = trajectory.to_json()
    record["turns"] = [t for t in record["turns"] if t["role"] != REFLECTION_ROLE]
    return record


def _records(workdir):
    with open(os.path.join(workdir, "episodes.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_tiny_preset_with_ablations_writes_every_variant(tmp_path):
    config = tiny_eval_config(tmp_path / "out", ablations=True, **{"reflection.trials": 2, "reflection.omega": 1})
    metrics = evaluate.evaluate(config)

    assert list(metrics["variants"]) == ["full", "no_reflection", "no_checker"]
    settings = {name: (m["variant"]["trials"], m["variant"]["checker"]) for name, m in metrics["variants"].items()}
    assert settings == {"full": (2, "static"), "no_reflection": (1, "static"), "no_checker": (2, "off")}
    assert metrics["model"]["preset"] == "tiny" and metrics["variants"]["full"]["variant"]["instructions"] == "short"
    for m in metrics["variants"].values():
        assert m["episodes"] == 3 and sum(m["statuses"].values()) == 3 and set(m["statuses"]) == set(STATUSES)
        assert [t["trial"] for t in m["per_trial"]] == list(range(1, m["variant"]["trials"] + 1))
        assert m["per_trial"][0]["episodes"] == 3
        assert m["correct"] == round(m["per_trial"][-1]["cumulative_accuracy"] * 3)
    with open(tmp_path / "out" / "metrics.json") as f:
        assert json.load(f) == json.loads(json.dumps(metrics))

    records = _records(tmp_path / "out")
    by_variant = {name: [Trajectory.from_json({k: v for k, v in r.items() if k != "variant"})
                         for r in records if r["variant"] == name] for name in metrics["variants"]}
    assert sum(len(v) for v in by_variant.values()) == len(records)
    full, alone = by_variant["full"], by_variant["no_reflection"]
    # Greedy decoding on the same tasks and model: the full variant's first trial is the no-reflection run
    # (up to the reflections written after it).
    first = [t for t in full if t.trial == 0]
    assert [without_reflections(t) for t in first] == [t.to_json() for t in alone]
    assert [t.task_id for t in alone] == [t.task_id for t in by_variant["no_checker"] if t.trial == 0]
    # A retry shows the reflection written after its task's failed first trial (omega=1: only that one).
    for retry in (t for t in full if t.trial == 1):
        [failed] = [t for t in first if t.task_id == retry.task_id]
        assert not failed.correct
        [reflection] = failed.role_turns(REFLECTION_ROLE)
        assert retry.memory_shown == [reflection.text]
        prompt = decode_ids(load_tokenizer(), retry.turns[0].prompt_ids)
        assert render_memory([reflection.text]) in prompt and prompt.count(MEMORY_HEADER) == 1
    assert len([t for t in full if t.trial == 1]) == 3 - metrics["variants"]["no_reflection"]["correct"]

    table = (tmp_path / "out" / "ablations.md").read_text()
    rows = table.strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("| variant | trials | checker | other (n=")
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["full", "no_reflection", "no_checker"]
    with open(tmp_path / "out" / "ablations.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_sft_runs_workdir_is_evaluated_with_its_adapters(tmp_path):
    run_dir = str(tmp_path / "run")
    trainer = Trainer(parse_run(tiny_config(run_dir, str(tmp_path / "data"),
                                            **{"train.steps": 1, "checkpoint.every": 1})))
    try:
        trainer.train()
    finally:
        trainer.close()
    config = tiny_eval_config(tmp_path / "out", checker="static+learned", max_tasks=2,
                              **{"model.preset": "", "model.workdir": run_dir, "reflection.trials": 1,
                                 "reflection.max_new_tokens": 0, "sampling.checker_max_new_tokens": 8})
    metrics = evaluate.evaluate(config)
    assert metrics["model"]["workdir"] == os.path.abspath(run_dir) and metrics["model"]["step"] == 1
    assert metrics["episodes"] == 2 and metrics["variant"] == {
        "name": "full", "trials": 1, "checker": "static+learned", "omega": None, "max_new_tokens": 12,
        "reflection_max_new_tokens": None, "instructions": "dbbench"}
    assert len(_records(tmp_path / "out")) == 2



def test_a_hugging_face_directory_plays_with_its_own_weights_and_tokenizer(tmp_path):
    import torch

    from tests import tiny_hf

    hf_dir = str(tmp_path / "hf")
    hf_model = tiny_hf.make_hf_model("qwen2_tied_gqa")  # 1,024 ids, as many as the bundled tokenizer
    tiny_hf.save_hf(hf_model, hf_dir)
    for name in os.listdir(bundled_tokenizer_dir()):
        shutil.copy(os.path.join(bundled_tokenizer_dir(), name), hf_dir)
    config = tiny_eval_config(tmp_path / "out", max_tasks=2, **{"model.preset": "", "model.hf_dir": hf_dir,
                                                                "reflection.trials": 1,
                                                                "reflection.max_new_tokens": 0})
    metrics = evaluate.evaluate(config)
    assert metrics["model"] == {"hf_dir": hf_dir, "dtype": "float32", "max_len": 1024, "sampler_batch": None}
    assert metrics["variant"]["instructions"] == "dbbench" and metrics["episodes"] == 2
    # Each episode's first reply is transformers' greedy continuation of the same prompt ids.
    eos = end_of_turn_ids(load_tokenizer(hf_dir))
    for record in _records(tmp_path / "out"):
        turn = record["turns"][0]
        with torch.no_grad():
            out = hf_model.generate(torch.tensor([turn["prompt_ids"]]), max_new_tokens=12, do_sample=False,
                                    eos_token_id=eos, pad_token_id=eos[0])
        assert turn["completion_ids"] == out[0, len(turn["prompt_ids"]):].tolist()


@pytest.mark.parametrize("overrides, message", [
    ({"model.preset": ""}, "needs exactly one of --config.model.hf_dir=DIR .* found none"),
    ({"model.hf_dir": "/models/x"}, "found model.hf_dir='/models/x', model.preset='tiny'"),
    ({"model.step": 3}, "model.step=3 would be ignored: it applies only with model.workdir"),
    ({"model.preset": "", "model.hf_dir": "/m", "model.seed": 1}, "model.seed=1 would be ignored"),
    ({"model.preset": "", "model.workdir": "/w", "model.dtype": "bfloat16"}, "model.dtype='bfloat16' would be"),
    ({"reflection.trials": 1, "reflection.omega": 2}, "reflection.omega=2 would be ignored"),
    ({"sampling.checker_max_new_tokens": 8}, "no variant has a learned Checker"),
    ({"ablations": True, "reflection.trials": 1}, "'no reflection' variant would repeat"),
    ({"ablations": True, "checker": "off"}, "'no Checker' variant would repeat"),
    ({"sampling.max_new_tokens": -1}, "sampling.max_new_tokens must be an int >= 0"),
    ({"instructions": "long"}, "choose from dbbench, short"),
])  # fmt: skip
def test_ambiguous_or_ignored_model_settings_are_refused(tmp_path, overrides, message):
    config = tiny_eval_config(tmp_path / "never", **overrides)
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate(config)
    assert not (tmp_path / "never").exists()


def test_an_unknown_preset_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        evaluate.evaluate(tiny_eval_config(tmp_path / "out", **{"model.preset": "huge"}))



def test_sampling_unroll_decode_layers_reaches_the_sampler(tmp_path, monkeypatch):
    from tests.sampler_capture import sampler_config_of

    for unroll in (False, True):
        config = tiny_eval_config(tmp_path / str(unroll), **{"sampling.unroll_decode_layers": unroll})
        built = sampler_config_of(monkeypatch, evaluate, lambda: evaluate.evaluate(config))
        assert built.unroll_decode_layers is unroll
