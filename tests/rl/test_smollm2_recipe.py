"""The real-model recipe (configs/cmat_smollm2_135m.py) runs end to end at tiny scale on CPU.

The model comes in the way SmolLM2 does: a GGUF file (here a tiny random
Llama written by the tests, Q8_0 matrices, ChatML template in its metadata)
imported by tools/import_gguf.py's code into a Hugging Face directory, which
the recipe trains (warm start, one CMAT iteration) and evaluates on the DBBench
dev split. The trained Assistant then goes back out as a merged Hugging Face
model and a PEFT adapter on the imported directory, and both load in
transformers with cmat_jax's logits.
"""

import os

from cmat_jax.checkpoints.gguf import import_gguf
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS
from tests.checkpoints import tiny_gguf
from tests.repo_configs import config_module, run_cmat


def test_recipe_trains_a_gguf_imported_model_and_evaluates_on_dbbench_dev(tmp_path):
    model = tiny_gguf.make_model("llama")
    model.config.max_position_embeddings = 2048  # DBBench's instructions and tables need the room
    path = tiny_gguf.write_gguf(model, str(tmp_path / "model.gguf"), tiny_gguf.MIXED)
    hf_dir = str(tmp_path / "hf")
    import_gguf(path, hf_dir)

    c = config_module("cmat_smollm2_135m").get_config()
    assert c.tasks.eval == DBBENCH_DEV_TASKS and c.tasks.generator_profile == "dbbench"
    c.workdir = str(tmp_path / "run")
    c.model.hf_dir = hf_dir
    c.tasks.train_count = 6
    c.train.steps = 2
    c.data.batch_size = 2
    c.data.seq_len = 1024
    c.rollout.tasks_per_iteration = 2
    c.rollout.group_size = 2
    c.rollout.max_new_tokens = 8
    c.rollout.max_len = 1024
    c.reflection.max_new_tokens = 8
    c.rl.iterations = 1
    c.rl.rows = 2
    c.rl.seq_len = 1024
    c.checkpoint.async_save = False
    run, records = run_cmat(c)
    assert [(r["phase"], r["iteration"]) for r in records] == [("sft", 0)] * 2 + [("eval", 0), ("rl", 1),
                                                                                   ("eval", 1)]
    assert len(run.eval_tasks) == 60  # the whole dev split: no generated task coincides with one
    assert os.path.isfile(os.path.join(c.workdir, "success.png"))

    # Out again: merged, and a PEFT adapter on the imported directory; both equal cmat_jax's float32 logits.
    import jax.numpy as jnp
    import numpy as np
    import peft
    import torch
    import transformers

    from cmat_jax.training.workdir import load_trained_model
    from tools import export_hf

    merged_dir, peft_dir = str(tmp_path / "merged"), str(tmp_path / "adapter")
    export_hf.main(["--workdir", c.workdir, "--merged", merged_dir, "--peft", peft_dir])
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 9)).astype(np.int32)
    ours = np.asarray(load_trained_model(c.workdir, exact_math=True)[0](jnp.asarray(tokens))[0])
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        base = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        adapted = peft.PeftModel.from_pretrained(base, peft_dir).eval()
        for theirs in (merged, adapted):
            assert np.abs(theirs(torch.tensor(tokens)).logits.numpy() - ours).max() <= 1e-4

