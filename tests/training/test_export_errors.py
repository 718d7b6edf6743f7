"""tools/export_hf.py: an output directory that cannot be written fails before the model loads, in one
line naming the flag and a fix, and the check leaves nothing behind."""

from __future__ import annotations

import os

import pytest



@pytest.fixture(scope="module")
def export_tool():
    from tools import export_hf

    return export_hf


def _error(export_tool, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        export_tool.main(list(argv))
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


@pytest.mark.parametrize("flag", ["--merged", "--peft", "--peft_base"])
def test_an_unwritable_output_names_its_flag_before_the_workdir_is_read(tmp_path, export_tool, flag):
    a_file = tmp_path / "weights.bin"
    a_file.write_text("not a directory")
    args = ["--workdir", str(tmp_path / "no_such_run"), "--peft", str(tmp_path / "ok")]
    if flag == "--peft":
        args = args[:2]
    assert _error(export_tool, *args, flag, str(a_file / "merged")) == (
        f"error: {flag} {a_file / 'merged'} cannot be written (Not a directory); pass a directory you can "
        f"create and write, e.g. {flag}=exports/merged")
    assert _error(export_tool, *args, flag, str(a_file)) == (
        f"error: {flag} {a_file} cannot be written (it is a file, not a directory); pass a directory you can "
        f"create and write, e.g. {flag}=exports/weights.bin")
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]  # the valid --peft directory was not left behind


def test_a_writable_output_passes_and_the_check_creates_nothing(tmp_path, export_tool):
    export_tool.check_output_dir("--merged", str(tmp_path / "new" / "nested" / "merged"))
    (tmp_path / "kept").mkdir()
    export_tool.check_output_dir("--merged", str(tmp_path / "kept"))
    assert sorted(os.listdir(tmp_path)) == ["kept"] and os.listdir(tmp_path / "kept") == []
    # With the outputs fine, the next problem reported is the workdir's.
    message = _error(export_tool, "--workdir", str(tmp_path / "no_such_run"), "--merged", str(tmp_path / "m"))
    assert "no_such_run/config.json does not exist" in message


def test_a_failing_write_names_its_flag_and_other_errors_keep_their_own_message(tmp_path, export_tool):
    out = str(tmp_path / "merged")
    with pytest.raises(OSError, match=r"^--merged .*merged: writing failed \(No space left on device\); free"):
        with export_tool._writing("--merged", out):
            raise OSError(28, "No space left on device", os.path.join(out, "model.safetensors.tmp"))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        with export_tool._writing("--merged", out):
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "base" / "tokenizer.json"))
