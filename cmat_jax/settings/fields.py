"""Reading and checking config values: the one error format of every setting.

A settings dataclass (one per config section) reads its fields from the
ConfigDict section of the same name (`Section.parse`) and checks them in its
`__post_init__` with the functions here. A refusal is a `SettingError` (a
ValueError) of one line naming the field as the command line writes it
(`rl.rows`), the value found and what is accepted:

    rl.rows must be an integer >= 1 (rows per update batch), found 0
    rl.objective is 'sac'; choose from ppo, reinforce

Values come out as the Python type the code uses (a float field set to 1 is
1.0), so the code below the entry points reads typed fields and casts nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Optional, Sequence


class SettingError(ValueError):
    """A config value that cannot run: one line naming the field, the value and what is accepted."""


def _meaning(what: str) -> str:
    return f" ({what})" if what else ""


def integer(field: str, value: Any, minimum: Optional[int] = None, what: str = "") -> int:
    """An int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise SettingError(f"{field} must be an integer{bound}{_meaning(what)}, found {value!r}")
    return int(value)


def number(field: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False, high_open: bool = False, what: str = "") -> float:
    """A finite real number in the interval the bounds give (closed unless `low_open` / `high_open`)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            bound = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bound = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bound = f" {'<' if high_open else '<='} {high:g}"
        else:
            bound = ""
        raise SettingError(f"{field} must be a finite number{bound}{_meaning(what)}, found {value!r}")
    return float(value)


def fraction(field: str, value: Any, what: str) -> float:
    """A share in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SettingError(f"{field} must be in [0, 1] ({what}), found {value!r}")
    return float(value)


def choice(field: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise SettingError(f"{field} is {value!r}; choose from {', '.join(choices)}")
    return value


def flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingError(f"{field} must be true or false, found {value!r}")
    return value


def text(field: str, value: Any, *, required: str = "") -> str:
    """A string; `required` (what to set) makes the empty string a refusal."""
    if not isinstance(value, str):
        raise SettingError(f"{field} must be a string, found {value!r}")
    if required and not value:
        raise SettingError(f"{field} is empty; {required}")
    return value


class Section:
    """Base of the settings dataclass of one config section (`SECTION`, e.g. 'rl').

    `parse(config)` reads every dataclass field from `config[SECTION]`; the subclass's `__post_init__`
    checks them through `self.check(name, checker, ...)`, which stores the checked (typed) value.
    """

    SECTION: ClassVar[str]

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, config):
        if cls.SECTION not in config:
            raise SettingError(f"the config has no section {cls.SECTION!r}; start it from the default config of "
                               "its mode (training/config.py)")
        section = config[cls.SECTION]
        missing = [name for name in cls.fields() if name not in section]
        if missing:
            raise SettingError(f"the config's {cls.SECTION} section lacks {', '.join(missing)}; start it from the "
                               "default config of its mode (training/config.py)")
        return cls(**{name: section[name] for name in cls.fields()})

    def name(self, field: str) -> str:
        return f"{self.SECTION}.{field}"

    def check(self, field: str, checker, *args, **kwargs) -> None:
        object.__setattr__(self, field, checker(self.name(field), getattr(self, field), *args, **kwargs))
