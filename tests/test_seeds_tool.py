"""tools/seeds.py: one config over several seeds at once, then each number as mean ± std over them."""

import json
import os
import statistics

import pytest

from tests.repo_configs import REPO
from cmat_jax.taskgen.generate import generate_records
from tools import seeds

TINY = ["--config.model.init_std=0.15", "--config.lora.rank=4", "--config.tasks.train_count=12",
        "--config.tasks.demo_count=4", "--config.tasks.eval_count=6", "--config.train.steps=3",
        "--config.train.warmup_steps=1", "--config.data.batch_size=2", "--config.data.seq_len=256",
        "--config.rollout.tasks_per_iteration=2", "--config.rollout.group_size=2",
        "--config.rollout.max_new_tokens=8", "--config.rollout.max_len=256", "--config.rl.iterations=2",
        "--config.rl.rows=2", "--config.rl.seq_len=256", "--config.rl.eval_every=1",
        "--config.checkpoint.every=1", "--config.rl.sft_twin=true", "--config.rl.sft_twin_steps=2",
        "--config.tasks.train_seed={seed}", "--config.tasks.eval_seed=100"]

HELDOUT_EVAL = ["--config.max_tasks=2", "--config.reflection.trials=1", "--config.checker=off",
                "--config.instructions=short", "--config.sampling.max_new_tokens=8", "--config.sampling.max_len=1024"]


def test_two_seeds_run_at_once_and_are_reported_as_mean_and_std(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = str(tmp_path / "runs")
    config = os.path.join("configs", "cmat_tiny.py")
    heldout = str(tmp_path / "heldout.jsonl")
    with open(heldout, "w", encoding="utf-8") as f:  # a seed no run trains on
        f.writelines(json.dumps(record) + "\n" for record in generate_records(3, 1000, "tiny"))
    assert seeds.main(["--config", config, "--seeds", "0,1", "--out", out, "--heldout", heldout,
                       *(f"--eval-arg={arg}" for arg in HELDOUT_EVAL), "--", *TINY]) == 0
    with open(os.path.join(out, "seeds.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert sorted(report["seeds"]) == ["0", "1"] and report["failed"] == {}
    for seed in (0, 1):
        run_config = json.load(open(os.path.join(out, f"seed_{seed}", "config.json"), encoding="utf-8"))
        assert run_config["seed"] == seed and run_config["data"]["seed"] == seed
        assert run_config["tasks"]["train_seed"] == seed  # "{seed}" in the training arguments
        result = report["seeds"][str(seed)]
        evals = [json.loads(line) for line in open(os.path.join(out, f"seed_{seed}", "metrics.jsonl"))
                 if '"eval"' in line]
        assert result["warm_start"] == evals[0]["success_rate"] and result["final"] == evals[-1]["success_rate"]
        assert result["cmat_minus_twin"] == pytest.approx(result["final"] - result["twin"])
    finals = [report["seeds"][s]["final"] for s in ("0", "1")]
    assert report["mean_std"]["final"] == pytest.approx(
        {"mean": statistics.fmean(finals), "std": statistics.pstdev(finals), "n": 2})
    assert "CMAT - twin" in open(os.path.join(out, "seeds.md"), encoding="utf-8").read()

    # Each seed's CMAT end and twin, scored on the held-out file.
    assert report["heldout_metric"] == "overall_cat_accuracy"
    for seed in (0, 1):
        result = report["seeds"][str(seed)]
        arms = (("cmat", "heldout_final", f"seed_{seed}"), ("twin", "heldout_twin", f"seed_{seed}/sft_twin"))
        for arm, key, workdir in arms:
            path = os.path.join(out, "heldout", f"seed_{seed}_{arm}", "metrics.json")
            metrics = json.load(open(path, encoding="utf-8"))
            assert metrics["tasks"] == heldout and metrics["episodes"] == 2
            assert metrics["model"]["workdir"] == os.path.abspath(os.path.join(out, workdir))
            assert result[key] == metrics["overall_cat_accuracy"]
        assert result["heldout_cmat_minus_twin"] == pytest.approx(result["heldout_final"] - result["heldout_twin"])
    assert "held-out set: CMAT - twin (`overall_cat_accuracy`)" in open(os.path.join(out, "seeds.md")).read()

    # A seed whose run left no summary is reported as failed, with its log's last line, and left out.
    os.remove(os.path.join(out, "seed_1", "summary.json"))
    with open(os.path.join(out, "seed_1.log"), "a", encoding="utf-8") as f:
        f.write("\nKilled\n")
    capsys.readouterr()
    assert seeds.main(["--out", out, "--seeds", "0,1", "--summarize-only", "--metric", "format_failure_rate"]) == 1
    printed = capsys.readouterr().out
    assert "seed 1 failed: Killed" in printed and "seed 0" in printed
    report = json.load(open(os.path.join(out, "seeds.json"), encoding="utf-8"))
    assert report["metric"] == "format_failure_rate" and report["mean_std"]["final"]["n"] == 1
    assert seeds.main(["--out", out, "--seeds", "0", "--summarize-only", "--metric", "nope"]) == 2
    assert "no field 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--out", "o", "--seeds", "0,x", "--summarize-only"], "must be comma-separated integers"),
    (["--out", "o", "--seeds", "1,1", "--summarize-only"], "must be distinct non-negative integers"),
    (["--out", "o", "--parallel", "-1", "--summarize-only"], "--parallel is -1"),
    (["--out", "o", "--config", "configs/nope.py"], "is not a file"),
    (["--out", "o", "--summarize-only", "--", "--config.seed=1"], "runs nothing"),
    (["--out", "o", "--summarize-only", "--heldout", "configs/cmat_tiny.py"], "--heldout has no use"),
    (["--out", "o", "--config", "configs/cmat_tiny.py", "--heldout", "nope.jsonl"], "'nope.jsonl' is not a file"),
    (["--out", "o", "--config", "configs/cmat_tiny.py", "--eval-arg=--config.max_tasks=2"], "give --heldout too"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        seeds.main(argv)
    assert message in capsys.readouterr().err


def test_a_failed_heldout_evaluation_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "runs"
    (out / "seed_0").mkdir(parents=True)
    (out / "seed_0" / "config.json").write_text("{}")  # a workdir with no checkpoint to evaluate
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("")
    args, _ = seeds.parse_args(["--config", "configs/cmat_tiny.py", "--seeds", "0", "--out", str(out),
                                "--heldout", str(heldout)])
    stale = out / "heldout" / "seed_0_cmat"  # a score of an earlier model of seed 0
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text(json.dumps({"overall_cat_accuracy": 0.5}))
    monkeypatch.setattr(seeds, "run_processes", lambda jobs, parallel: dict.fromkeys(jobs, 0))  # train nothing
    seeds.run_seeds(args, [])
    assert not stale.exists()
    monkeypatch.undo()
    monkeypatch.chdir(REPO)
    [failure] = seeds.run_heldout(args, [0])
    assert failure.startswith("seed 0 cmat held-out failed: ") and "seed_0_cmat.log" in failure
    assert seeds.heldout_result(str(out), 0, "overall_cat_accuracy") == {
        "heldout_final": None, "heldout_twin": None, "heldout_cmat_minus_twin": None}
