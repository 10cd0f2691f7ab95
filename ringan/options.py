"""Typed verb options: one dataclass per verb, read from flags, `--config` files or Python with the same checks.

A verb's options are a frozen dataclass whose fields are declared with `option(default, help, ...)`: the type
comes from the annotation, the checks (range, choices, evenness) from the keywords. The argparse parser is
built from the fields (`add_arguments`), config files are read into the same fields (`read_config`), and every
value, whatever its source, goes through `convert`: `"3e-3"` from YAML becomes `0.003` exactly as `--learning-rate
3e-3` does, and a value out of range is an `OptionError` naming the option the way the user wrote it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import OptionError, UserError

_METADATA_KEY = "ringan_option"


@dataclasses.dataclass(frozen=True)
class Check:
    """What an option accepts besides its type. Bounds: `minimum`/`maximum` inclusive, `above`/`below` exclusive."""

    help: str
    choices: tuple | None = None
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    even: bool = False
    default_text: str | None = None  # what the default means, when its value says little (None, "")


def option(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field for a verb option: its default, its one-line `--help` and its `Check` keywords."""
    return dataclasses.field(default=default, metadata={_METADATA_KEY: Check(help, **checks)})


@dataclasses.dataclass(frozen=True)
class Kind:
    """The shape of an option's annotation: `int`, `str | None`, `list[str] | None`, ..."""

    base: type
    is_list: bool
    optional: bool


def _kind(annotation: Any) -> Kind:
    optional, is_list = False, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(args) < len(typing.get_args(annotation)), args[0]
    if typing.get_origin(annotation) is list:
        is_list, annotation = True, typing.get_args(annotation)[0]
    return Kind(annotation, is_list, optional)


@functools.cache
def option_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Kind, Check]]:
    """Every option of an options class: `{name: (field, kind, check)}`, the class's own fields first (a verb's
    `--help` opens with what is particular to it, then the options it shares with others)."""
    hints = typing.get_type_hints(cls)
    own = cls.__dict__.get("__annotations__", {})
    ordered = sorted(dataclasses.fields(cls), key=lambda f: f.name not in own)
    return {f.name: (f, _kind(hints[f.name]), f.metadata[_METADATA_KEY]) for f in ordered}


def default_of(cls: type, name: str) -> Any:
    """The default value of option `name` of `cls`."""
    return option_fields(cls)[name][0].default


# ------------------------------------------------------------------------------------------- conversion


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def expected(kind: Kind, check: Check) -> str:
    """`"expected an integer >= 1"`, `"expected a number in (0, 1]"`, `"expected one of 8, 4"`, ..."""
    if check.choices is not None:
        return "expected one of " + ", ".join("none" if c is None else str(c) for c in check.choices)
    noun = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind.base]
    if check.even:
        noun = "an even integer"
    low = (check.minimum, "[", ">=") if check.minimum is not None else (check.above, "(", ">")
    high = (check.maximum, "]", "<=") if check.maximum is not None else (check.below, ")", "<")
    if low[0] is not None and high[0] is not None:
        text = f"{noun} in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
    elif low[0] is not None:
        text = f"{noun} {low[2]} {_number(low[0])}"
    elif high[0] is not None:
        text = f"{noun} {high[2]} {_number(high[0])}"
    else:
        text = "a finite number" if kind.base is float else noun
    return "expected " + ("one or more values, each " + text if kind.is_list else text)


def _show(value: Any) -> str:
    """A value as the message quotes it: text in quotes, booleans as YAML writes them."""
    if isinstance(value, str):
        return repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _scalar(kind: Kind, check: Check, value: Any) -> Any:
    """`value` as `kind.base`, or raise `ValueError`. Text is parsed as on the command line."""
    if isinstance(value, str) and value.strip().lower() == "none" and check.choices and None in check.choices:
        return None  # `--quantize none`: how a flag spells an optional choice's None
    if kind.base is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError  # True is an int to Python, never a size or a rate to a user
    if kind.base is int:
        if isinstance(value, float):
            raise ValueError
        return int(value)
    if kind.base is float:
        number = float(value)  # YAML 1.1 reads `3e-3` as a string: it gets the same parse as the flag
        if not math.isfinite(number):
            raise ValueError
        return number
    return str(value)


def _within(check: Check, value: Any) -> bool:
    if value is None:
        return True
    if check.choices is not None:
        return value in check.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return (
        (check.minimum is None or value >= check.minimum)
        and (check.above is None or value > check.above)
        and (check.maximum is None or value <= check.maximum)
        and (check.below is None or value < check.below)
        and (not check.even or value % 2 == 0)
    )


def convert(cls: type, name: str, value: Any, where: str | None = None) -> Any:
    """`value` for option `name` of `cls`, converted and checked; `OptionError` (labelled `where`) if it is bad."""
    _, kind, check = option_fields(cls)[name]
    where = where or name
    if value is None:
        if kind.optional:
            return None
        raise OptionError(where, expected(kind, check), "none")
    items = [value]
    if kind.is_list:
        items = [value] if isinstance(value, str) else value  # one path in a config file stands for a list of one
        if not isinstance(items, (list, tuple)):
            raise OptionError(where, expected(kind, check), _show(value))
    converted = []
    for item in items:
        try:
            item = _scalar(kind, check, item)
        except (ValueError, TypeError):
            raise OptionError(where, expected(kind, check), _show(item)) from None
        if not _within(check, item):
            raise OptionError(where, expected(kind, check), _show(item))
        converted.append(item)
    return converted if kind.is_list else converted[0]


def unknown_option(where: str, name: str, known: list[str], spell=lambda n: n) -> OptionError:
    """The error for a misspelt option: names it and lists the close matches."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(spell(c) for c in close)}?)" if close else ""
    return OptionError(where, f"unknown option{hint}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every verb's options: converts and checks each field when an instance is made."""

    def __post_init__(self) -> None:
        for name in option_fields(type(self)):
            object.__setattr__(self, name, convert(type(self), name, getattr(self, name)))

    @classmethod
    def build(cls, options: Options | None = None, overrides: Mapping[str, Any] | None = None):
        """`options` (or the defaults) with `overrides` applied: the keyword form of every verb function."""
        overrides = dict(overrides or {})
        known = list(option_fields(cls))
        for name in overrides:
            if name not in known:
                raise unknown_option(name, name, known)
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(options).__name__}")
        return dataclasses.replace(options, **overrides) if options is not None else cls(**overrides)


# ------------------------------------------------------------------------------------- flags and files


def flag(name: str) -> str:
    """`max_length` -> `--max-length`."""
    return "--" + name.replace("_", "-")


def description(cls: type) -> str:
    """A verb's `--help` description: its options class's docstring."""
    return inspect.cleandoc(cls.__doc__ or "")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of `cls`. Flags are read as text (and converted by `convert`), and a flag not given is
    absent from the namespace, so a config file can supply it."""
    for name, (field, kind, check) in option_fields(cls).items():
        default = check.default_text or ("" if field.default in (None, "") else str(field.default))
        help_text = (check.help + (f" (default: {default})" if default else "")).replace("%", "%%")
        common = dict(dest=name, default=argparse.SUPPRESS, help=help_text)
        if kind.base is bool:
            parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, **common)
            continue
        metavar = {int: "N", float: "X"}.get(kind.base)
        if check.choices:
            metavar = "{" + ",".join("none" if c is None else str(c) for c in check.choices) + "}"
        if kind.is_list:
            parser.add_argument(flag(name), nargs="+", action="extend", metavar=metavar, **common)
        else:
            parser.add_argument(flag(name), metavar=metavar, **common)


def read_config(path: str, cls: type) -> dict[str, Any]:
    """The options in a YAML or JSON file (keys are option names, `-` or `_`), converted and checked."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: config file not found")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: a config file of {file.stat().st_size:,} bytes; at most {MAX_CONFIG_BYTES:,}")
    text = file.read_text(encoding="utf-8")
    try:
        values = (_read_yaml(text) or {}) if file.suffix in (".yaml", ".yml") else json.loads(text)
    except RecursionError:
        raise UserError(f"{path}: cannot parse config (nested too deeply)") from None
    except Exception as err:  # noqa: BLE001  (any parse error becomes one line)
        raise UserError(f"{path}: cannot parse config ({' '.join(str(err).split())[:300]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    known = list(option_fields(cls))
    converted = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise unknown_option(f"{path}: {key}", name, known)
        converted[name] = convert(cls, name, value, f"{path}: {key}")
    return converted


MAX_CONFIG_BYTES = 1_000_000


def _read_yaml(text: str) -> Any:
    """YAML as a config file needs it: a key given twice is an error (PyYAML keeps the last silently), and
    aliases are refused (a few lines of nested aliases expand to gigabytes)."""
    import yaml

    class Strict(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError(f"aliases (*{self.peek_event().anchor}) are not allowed in a config file")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.YAMLError(f"{key!r} is given twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=Strict)  # a SafeLoader: plain data only
