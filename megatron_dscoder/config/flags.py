"""Command-line flags generated from config dataclass fields: the one mechanism behind every CLI.

A config field declares its flag where it declares its default, with :func:`opt`; the flag is
``--field-name`` (:func:`flag`) unless the field names another (``flag="--no-filters"``), and
its type, help and choices come from the field. Flags have no defaults of their own
(``argparse.SUPPRESS``): a flag left out keeps the dataclass's (or the recipe's) value, so every
default is written once. Training (:mod:`.cli`) applies the given flags to a recipe by field
name; preprocessing (:mod:`megatron_dscoder.preprocess.cli`) builds its options dataclass from
them with :func:`values_from_args`, walking into sub-configs declared with :func:`section`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Any

from megatron_dscoder.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot run; the message names the offending values."""


def opt(default: Any = None, help: str | None = None, **cli: Any) -> Any:
    """A config field and its command-line flag (``--field-name``): ``help`` (``None`` shows the
    default; ``%(default)s`` in it is replaced by the default), ``choices``, ``cli=False`` (not a
    flag), ``hidden=True`` (a flag left out of ``--help``), ``flag="--other-name"`` (a bool
    that defaults to True gets a ``--no-...`` flag that clears it), ``parse`` (a function from
    the parsed flag value to the field value), or argparse's ``metavar``/``nargs``/``action``/
    ``required``. The flag has no default of its own: left out, the field keeps its value."""
    return field(default=default, metadata={"help": help, **cli})


def section(cls: type, help: str | None = None, **cli: Any) -> Any:
    """A sub-config field whose own fields are flags too: ``prefix="dedup"`` names them
    ``--dedup-<field>`` (unless they name their flag), ``off="--no-dedup"`` is a flag that sets
    the field to ``None`` (the stage is off); the default is ``cls()``."""
    return field(default_factory=cls, metadata={"help": help, "section": cls, **cli})


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``train_iters`` -> ``--train-iters``."""
    return "--" + name.replace("_", "-")


def require_positive(obj: object, *names: str, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` for the first of ``names`` that is not a finite number > 0 (or
    >= 0): NaN and infinity are refused too."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        bound = ">= 0" if allow_zero else "> 0"
        if not math.isfinite(value):
            raise ConfigError(f"{flag(name)} must be a finite number {bound}, got {value}")
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{flag(name)} must be {bound}, got {value}")


def check_choices(obj: object) -> None:
    """Raise :class:`ConfigError` for a field outside the ``choices`` its :func:`opt` lists."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{flag(f.name)} {value!r}: choose {', '.join(choices)}")


_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": int, "metavar": "N"},
    "float": {"type": float, "metavar": "X"},
    "str": {"metavar": "S"},
    "bool": {"action": "store_true"},
    "tuple[str, ...]": {"nargs": "+", "metavar": "S"},
    "tuple[int, ...]": {"type": int, "nargs": "*", "metavar": "N"},
}
_ARGPARSE_KEYS = ("metavar", "nargs", "action", "required")


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The flag of field ``f`` (``prefix`` is its section's:
    ``threshold`` -> ``--dedup-threshold``)."""
    return f.metadata.get("flag") or flag(f"{prefix}_{f.name}" if prefix else f.name)


def argparse_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    """argparse keywords for a config field, from its type and :func:`opt` metadata."""
    kwargs = dict(_TYPES.get(str(f.type).removesuffix(" | None"), {}))  # else: strings
    if str(f.type) == "bool | None":  # a tri-state switch: --x, --no-x, or left to the default
        kwargs = {"action": argparse.BooleanOptionalAction}
    elif f.default is True:
        kwargs["action"] = "store_false"  # a --no-... flag
    help_text = f.metadata.get("help")
    if help_text is None and f.default not in (MISSING, None, False, ()):
        help_text = f"default: {f.default}"
    elif help_text is not None:
        shown = f"{f.default:g}".replace("e+0", "e") if isinstance(f.default, float) else f.default
        help_text = help_text.replace("%(default)s", str(shown))
    kwargs["help"] = argparse.SUPPRESS if f.metadata.get("hidden") else help_text
    if f.metadata.get("choices"):
        kwargs["choices"] = f.metadata["choices"]
        kwargs.pop("metavar", None)
    kwargs.update({k: f.metadata[k] for k in _ARGPARSE_KEYS if k in f.metadata})
    if kwargs.get("action") not in (None, "store"):
        kwargs.pop("metavar", None)
        kwargs.pop("type", None)
    return kwargs


def add_flags(group: Any, cls: type, prefix: str = "", dest: str = "") -> None:
    """Add a flag (default ``SUPPRESS``) for every command-line field of ``cls`` to ``group``;
    a :func:`section` field adds its ``off`` flag and its own fields' flags
    (dest ``name.field``)."""
    for f in fields(cls):
        if not f.metadata.get("cli", True):
            continue
        sub = f.metadata.get("section")
        if sub is None:
            group.add_argument(
                flag_of(f, prefix),
                dest=dest + f.name,
                default=argparse.SUPPRESS,
                **argparse_kwargs(f),
            )
            continue
        if f.metadata.get("off"):
            group.add_argument(
                f.metadata["off"],
                dest=f"{dest}{f.name}.off",
                action="store_true",
                default=argparse.SUPPRESS,
                help=f.metadata.get("help"),
            )
        add_flags(group, sub, f.metadata.get("prefix", ""), f"{dest}{f.name}.")


def values_from_args(cls: type, args: argparse.Namespace, dest: str = "") -> dict[str, Any]:
    """The keyword arguments of ``cls`` that the parsed flags give (see :func:`add_flags`):
    flagged fields by name, each section built from its own flags (or ``None`` when off)."""
    given = vars(args)
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = dest + f.name
        sub = f.metadata.get("section")
        if sub is not None:
            if given.get(f"{name}.off"):
                values[f.name] = None
            elif sub_values := values_from_args(sub, args, f"{name}."):
                values[f.name] = sub(**sub_values)
        elif name in given:
            parse: Callable[[Any], Any] | None = f.metadata.get("parse")
            value = given[name]
            values[f.name] = (
                parse(value) if parse else tuple(value) if isinstance(value, list) else value
            )
    return values


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line (no usage dump): ``prog: error: what is wrong``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")
