"""Export a trained run as Hugging Face directories.

    python tools/export_hf.py --workdir workdir/sft_tiny --merged out/merged --peft out/adapter [--step 150]

--merged  a full model with the adapters folded into the weights (config.json,
          safetensors, tokenizer files): loads with AutoModelForCausalLM.
--peft    a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors)
          for peft.PeftModel.from_pretrained(base, dir). Its base is the run's
          model.hf_dir; a run without one (random-init preset) or an original
          Qwen checkpoint gets its base written in the Qwen2/Llama layout to
          --peft_base (default: <peft>_base). A CMAT run with several tuned
          roles (a learned Checker) gets one adapter per role, in <peft>/<role>.
--merged is the Assistant's model (--role picks another role).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cmat_jax.training.build import DTYPES  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the run's workdir (holds config.json and checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--merged", default=None, help="output directory of the merged model")
    parser.add_argument("--peft", default=None, help="output directory of the PEFT adapter")
    parser.add_argument("--peft_base", default=None, help="where to write the adapter's base when the run has none")
    parser.add_argument("--role", default="assistant", help="the role whose model --merged writes (CMAT runs)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="dtype of the written weights (default: the base's)")
    args = parser.parse_args(argv)
    if not args.merged and not args.peft:
        parser.error("nothing to do: give --merged and/or --peft")
    return args


def check_output_dir(flag: str, path: str) -> None:
    """Proves `path` can be created and written, before the model loads, by doing it (and undoing the
    directories it had to create); an OSError naming `flag` and a fix otherwise."""
    created = []  # missing directories, deepest first
    missing = os.path.abspath(path)
    while not os.path.exists(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    try:
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OSError(f"{flag} {path} cannot be written ({e.strerror or e}); pass a directory you can create "
                      f"and write, e.g. {flag}=exports/{os.path.basename(path.rstrip('/')) or 'model'}") from None
    finally:
        for directory in created:
            if os.path.isdir(directory):
                os.rmdir(directory)


@contextlib.contextmanager
def _writing(flag: str, path: str):
    """A write that fails after the checks (disk full, a directory removed meanwhile) still names its flag."""
    try:
        yield
    except OSError as e:
        target = os.path.abspath(path)
        if not e.filename or os.path.commonpath([target, os.path.abspath(os.fspath(e.filename))]) != target:
            raise  # not a write under `path` (e.g. reading the base's files): its own message says which file
        raise OSError(f"{flag} {path}: writing failed ({e.strerror or e}); free space there or pass another "
                      f"directory") from None


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        for flag, path in (("--merged", args.merged), ("--peft", args.peft), ("--peft_base", args.peft_base)):
            if path:
                check_output_dir(flag, path)
        export(args)
    except (ValueError, OSError) as e:  # no checkpoint, unknown step, unwritable output: the message says why
        raise SystemExit(f"error: {e}") from None


def export(args) -> None:
    from cmat_jax.checkpoints.hf import save_hf_model, save_peft_adapter
    from cmat_jax.data.tokenizer import bundled_tokenizer_dir
    from cmat_jax.models.config import load_hf_config
    from cmat_jax.training.build import tokenizer_path
    from cmat_jax.training.workdir import load_trained_model, saved_roles

    model, config, step = load_trained_model(args.workdir, step=args.step, role=args.role)
    hf_dir = config.model.hf_dir or None
    # The tokenizer the run trained with; generation_config.json comes from the base.
    files = dict(source_dir=hf_dir, tokenizer_dir=tokenizer_path(config) or str(bundled_tokenizer_dir()))
    dtype = DTYPES[args.dtype] if args.dtype else None
    if args.merged:
        with _writing("--merged", args.merged):
            save_hf_model(model, args.merged, dtype=dtype, **files)
        print(f"step {step}: merged model of role {args.role} written to {args.merged}")
    if args.peft:
        base_dir = hf_dir
        if base_dir is None or load_hf_config(base_dir)[1].get("model_type") == "qwen":
            base_dir = args.peft_base or args.peft.rstrip("/\\") + "_base"
            with _writing("--peft_base", base_dir):
                save_hf_model(model, base_dir, dtype=dtype, merge_adapters=False, **files)
            print(f"adapter base written to {base_dir}")
        roles = saved_roles(args.workdir, step)
        for role in roles:
            out = args.peft if len(roles) == 1 else os.path.join(args.peft, role)
            role_model = model if role == args.role else load_trained_model(args.workdir, step=step, role=role)[0]
            with _writing("--peft", out):
                save_peft_adapter(role_model, out, base_model_dir=base_dir)
            print(f"step {step}: PEFT adapter of role {role} written to {out} (base: {base_dir})")

if __name__ == "__main__":
    main()
