"""Entry point of the config-file CLIs: absl's `app.run` with command-line mistakes as one line.

    if __name__ == "__main__":
        cli.run(main)          # instead of app.run(main)

Every mistake in the flags prints one line, `error: ...`, on stderr and exits
with status 2 before `main` runs:

- a missing `--config`, or a config file that does not exist or fails to load,
  is named by its flag and path (with the line of the failure);
- an unknown field (`--config.train.stepz=10`) names the field and the nearest
  valid names (difflib), wherever in the config they are;
- a value of the wrong type names the field, the type it takes and the value found;
- a field whose config value is None names the field and says to set it in the
  config file (ml_collections cannot override a None field: its type is unknown);
- any other flags error is its own message, cut to its first line.

Only flags defined with `ml_collections.config_flags.DEFINE_config_file` get
the config-specific diagnosis. It runs only after parsing has failed, so a
correct command line is parsed exactly as `app.run` parses it.

`run` also makes SIGINT and SIGTERM raise `interrupts.Interrupted` (cleanup in
`finally` blocks runs), so a stop ends with one line and status 130 or 143
instead of a KeyboardInterrupt traceback; a full disk or a read-only file
system ends with one line naming the path, and status 1.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import threading
import traceback
from typing import Any, Callable, Iterator, Optional, Sequence

from absl import app, flags
from ml_collections import config_dict
from ml_collections.config_flags import config_flags as ml_config_flags  # is_config_flag lives here

from cmat_jax import interrupts
from cmat_jax.fileio import disk_error

USAGE_ERROR_STATUS = 2  # as argparse: the command line itself is wrong

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               tuple: "a tuple, e.g. '(1, 2)'"}


class CommandLineError(Exception):
    """A mistake on the command line; the message is one line that says what to fix."""


def run(main: Callable[[list[str]], Any], argv: Optional[list[str]] = None, *,
        describe: Callable[[BaseException], Optional[str]] = lambda error: None) -> None:
    """`absl.app.run(main)` whose flag mistakes, signals and disk errors are one line (the module docstring).

    `describe(error)` may give the line of a stop (interrupts.Interrupted) or a disk error in the program's
    own words (train.py: where to resume from); None keeps the plain one."""
    interrupts.install()
    try:
        app.run(main, argv=argv, flags_parser=parse_flags)
    except interrupts.Interrupted as stop:
        print(describe(stop) or f"{stop.name}: stopped", file=sys.stderr, flush=True)
        sys.exit(stop.status)
    except Exception as error:  # noqa: BLE001 - only a full or read-only disk is handled here
        found = disk_error(error)
        if found is None:
            raise
        # What failed threads of a library (an orbax save on a full disk) print at exit says nothing more.
        print(describe(error) or f"error: {found.line()}", file=sys.stderr, flush=True)
        sys.unraisablehook = lambda unraisable: None
        threading.excepthook = lambda args: None
        sys.exit(1)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl `flags_parser`: parses FLAGS, or prints one `error:` line and exits with status 2."""
    try:
        return _parse(list(argv))
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR_STATUS)


def _parse(argv: list[str]) -> list[str]:
    config_args = dict(_config_file_args(argv))
    for name, value in config_args.items():
        _check_config_file(name, value)
    try:
        remaining = flags.FLAGS(argv)
    except Exception as error:  # ml_collections raises AttributeError/KeyError/IOError as well as flags.Error
        raise CommandLineError(_explain(argv, config_args, error)) from None
    for name in _config_flag_names():
        if name not in config_args and flags.FLAGS[name].value is None:
            raise CommandLineError(f"--{name} is missing; pass the path of a config file, e.g. "
                                   f"--{name}=configs/<name>.py")
    for name, value in config_args.items():
        # A config file that raised IOError inside get_config() parses as a placeholder that fails when read.
        if not isinstance(flags.FLAGS[name].value, config_dict.ConfigDict):
            _load_config(name, value)
    return remaining


def _config_flag_names() -> list[str]:
    names = []
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if name == flag.name and ml_config_flags.is_config_flag(flag) and \
                isinstance(flag.parser, ml_config_flags.ConfigFileFlagParser):
            names.append(name)
    return names


def _command_line_args(argv: list[str]) -> Iterator[str]:
    for arg in argv[1:]:
        if arg == "--":
            return
        yield arg


def _config_file_args(argv: list[str]) -> Iterator[tuple[str, str]]:
    """(config flag name, its value on the command line), for each config-file flag given."""
    args = list(_command_line_args(argv))
    for name in _config_flag_names():
        for i, arg in enumerate(args):
            match = re.fullmatch(rf"--?{re.escape(name)}(=(.*))?", arg, re.DOTALL)
            if match and match.group(1):
                yield name, match.group(2)
            elif match and i + 1 < len(args):
                yield name, args[i + 1]


def _overrides(argv: list[str], name: str) -> Iterator[tuple[str, str, Optional[str]]]:
    """(the argument as typed, field path, value or None) for each `--name.path[=value]`."""
    for arg in _command_line_args(argv):
        match = re.fullmatch(rf"--?(no)?{re.escape(name)}\.([^=]+)(=(.*))?", arg, re.DOTALL)
        if match:
            value = match.group(4) if match.group(3) else None
            yield arg, match.group(2), value


def _check_config_file(name: str, value: str) -> None:
    path = value.split(":", 1)[0]
    if not path:
        raise CommandLineError(f"--{name} is empty; pass the path of a config file, e.g. --{name}=configs/<name>.py")
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        found = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
        nearest = difflib.get_close_matches(os.path.basename(path), found, n=3)
        hint = (f"; did you mean {' or '.join(os.path.join(os.path.dirname(path), f) for f in nearest)}?"
                if nearest else f"; config files in {folder}: {', '.join(found)}" if found else "")
        raise CommandLineError(f"config file {path} (--{name}) does not exist{hint}")


def _load_config(name: str, value: str) -> Any:
    """The config `value` names, loaded as ml_collections does; a failure is one line naming the file."""
    path, *args = value.split(":", 1)
    try:
        spec = importlib.util.spec_from_file_location(f"_cli_{name}_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(*args)
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) ==
                  os.path.abspath(path)]
        at = f" at {path}:{frames[-1].lineno}" if frames else ""
        if isinstance(error, SyntaxError) and error.lineno:
            at = f" at {path}:{error.lineno}"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CommandLineError(f"config file {path} (--{name}) failed to load{at}: "
                               f"{type(error).__name__}: {detail}") from None


def _explain(argv: list[str], config_args: dict[str, str], error: Exception) -> str:
    """One line for a failed parse: the config-field mistake behind it when there is one."""
    for name, value in config_args.items():
        config = _load_config(name, value)  # a file that fails to load is named here
        for arg, field, raw in _overrides(argv, name):
            problem = _field_problem(config, field, raw, name, value.split(":", 1)[0], arg)
            if problem:
                return problem
    message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return first if isinstance(error, flags.Error) else f"{type(error).__name__}: {first}"


def _field_problem(config: Any, field: str, raw: Optional[str], name: str, path: str, arg: str) -> Optional[str]:
    if "[" in field:  # indexing into a list field: left to ml_collections
        return None
    node, walked, kind = config, [], type(config)
    for part in field.split("."):
        if not isinstance(node, (config_dict.ConfigDict, dict)) or part not in node:
            return _unknown_field(config, node, walked, part, name, path)
        # A placeholder field holds None but declares its type; get_type says which.
        kind = node.get_type(part) if isinstance(node, config_dict.ConfigDict) else type(node[part])
        node = node[part]
        walked.append(part)
    if isinstance(node, config_dict.ConfigDict):
        return (f"--{name}.{field} is a section of {path}, not a value; set one of its fields, e.g. "
                f"--{name}.{field}.{next(iter(node.keys()), '<field>')}=...")
    if kind is type(None):
        return (f"--{name}.{field}: the field is None in {path}, and a None field cannot be set from the "
                f"command line (its type is unknown); set it in the config file")
    if raw is None:  # `--name.field value` or `--noname.field`: absl's own message is clear enough
        return None
    expected = _TYPE_NAMES.get(kind)
    if expected and not _parses_as(kind, raw):
        return f"--{name}.{field}: expected {expected} (the config has {node!r}), found {raw!r}"
    return None


def _parses_as(kind: type, raw: str) -> bool:
    """Whether absl's parser for `kind` accepts `raw` (the parsers ml_collections uses for these types)."""
    parser = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser()}.get(kind)
    if parser is None:
        return True
    try:
        parser.parse(raw)
    except (ValueError, TypeError):
        return False
    return True


def _leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, config_dict.ConfigDict):
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


def _unknown_field(config: Any, node: Any, walked: list[str], part: str, name: str, path: str) -> str:
    where = ".".join(walked)
    field = ".".join([*walked, part])
    if not isinstance(node, (config_dict.ConfigDict, dict)):
        return f"--{name}.{field}: {where} is a value in {path} ({node!r}), not a section with fields"
    keys = [str(key) for key in node.keys()]
    siblings = [f"{where}.{key}" if where else key for key in keys]
    nearest = [f"{where}.{key}" if where else key for key in difflib.get_close_matches(part, keys, n=3, cutoff=0.6)]
    if not nearest:  # the right name in another section, e.g. --config.steps for train.steps
        leaves = list(_leaf_paths(config))
        by_last = {}
        for leaf in leaves:
            by_last.setdefault(leaf.rsplit(".", 1)[-1], []).append(leaf)
        close = difflib.get_close_matches(part, list(by_last), n=3, cutoff=0.75)
        nearest = [leaf for key in close for leaf in by_last[key]][:3]
    if nearest:
        hint = f"nearest valid names: {', '.join(nearest)}"
    else:
        hint = f"valid names: {', '.join(sorted(siblings))}"
    return f"--{name}.{field}: {path} has no field {field}; {hint}"
