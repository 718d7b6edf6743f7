"""tools/export_hf.py: the merged export and the PEFT adapter (loaded with peft +
transformers) give the same logits as cmat_jax itself."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import peft  # a test extra (setup.py): a missing install fails here rather than skipping the export checks
import pytest
import torch
import transformers

from cmat_jax.data.tokenizer import bundled_tokenizer_dir, load_tokenizer
from cmat_jax.settings.run import parse_run
from cmat_jax.training.trainer import Trainer
from cmat_jax.training.workdir import load_trained_model
from tests.tiny_hf import make_hf_model, save_hf
from tests.training.common import tiny_config

TOLERANCE = 1e-4  # logits, float32


def _export_tool():
    from tools import export_hf

    return export_hf


def _torch_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("base", ["hf_dir", "random_init"])
def test_peft_and_merged_exports_match_cmat_jax(tmp_path, base):
    overrides = {"data.batch_size": 2, "train.steps": 3, "train.warmup_steps": 0, "train.learning_rate": 2e-2,
                 "lora.targets": "q|v|o|up|down"}
    if base == "hf_dir":
        overrides["model.random_init"] = False
        overrides["model.hf_dir"] = save_hf(make_hf_model("qwen2_tied_gqa"), str(tmp_path / "hf"))
        overrides["data.tokenizer"] = str(bundled_tokenizer_dir())
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **overrides)
    trainer = Trainer(parse_run(config))
    trainer.train()
    trainer.close()

    merged_dir, peft_dir = str(tmp_path / "merged"), str(tmp_path / "adapter")
    _export_tool().main(["--workdir", config.workdir, "--merged", merged_dir, "--peft", peft_dir])
    base_dir = config.model.hf_dir or peft_dir + "_base"

    tokens = np.random.default_rng(0).integers(0, 1024, (2, 13)).astype(np.int32)
    model, _, step = load_trained_model(config.workdir)
    assert step == 3
    ours = np.asarray(model(jnp.asarray(tokens))[0])

    # A run saved before a field existed (here model.decode_attention) loads with that field's default.
    path = os.path.join(config.workdir, "config.json")
    saved = json.load(open(path, encoding="utf-8"))
    del saved["model"]["decode_attention"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    older, older_config, _ = load_trained_model(config.workdir)
    assert older_config.model.decode_attention == "xla"
    assert np.array_equal(np.asarray(older(jnp.asarray(tokens))[0]), ours)
    without_adapters = np.asarray(model(jnp.asarray(tokens), use_lora=False)[0])
    assert np.abs(ours - without_adapters).max() > 100 * TOLERANCE, "training left the adapters without effect"

    # The merged model ships the tokenizer the run trained with (the bundled one here).
    exported = transformers.AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    assert exported.get_vocab() == load_tokenizer(str(bundled_tokenizer_dir())).get_vocab()

    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    base_model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with_adapter = peft.PeftModel.from_pretrained(base_model, peft_dir).eval()
    merged_logits, peft_logits = _torch_logits(merged, tokens), _torch_logits(with_adapter, tokens)
    assert np.abs(merged_logits - ours).max() <= TOLERANCE
    assert np.abs(peft_logits - ours).max() <= TOLERANCE
    assert np.abs(peft_logits - merged_logits).max() <= TOLERANCE

    # The parity tool accepts a training workdir as its candidate.
    from tools import check_parity

    assert check_parity.main(["--hf-dir", merged_dir, "--against", config.workdir]) == 0


def test_export_of_a_workdir_without_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*config\.json"):
        _export_tool().main(["--workdir", str(tmp_path), "--merged", str(tmp_path / "merged")])


def test_parity_of_a_bf16_run_is_checked_in_float32(tmp_path):
    """check_parity rebuilds a workdir's model with exact float32 math, whatever the run computed in."""
    from tools import check_parity

    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{
        "data.batch_size": 2, "train.steps": 1, "model.dtype": "bfloat16", "model.param_dtype": "bfloat16"})
    trainer = Trainer(parse_run(config))
    trainer.train()
    trainer.close()
    merged_dir = str(tmp_path / "merged")
    _export_tool().main(["--workdir", config.workdir, "--merged", merged_dir, "--dtype", "float32"])
    assert check_parity.main(["--hf-dir", merged_dir, "--against", config.workdir]) == 0
