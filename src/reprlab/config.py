"""Run configurations as plain dataclasses: the single source of every flag, TOML key and default.

Each mode declares one dataclass (subclassing :class:`RunConfig`); a field's ``help`` metadata is
its documentation. :func:`add_arguments` turns the fields into ``--snake_case`` flags (with
``--kebab-case`` aliases), :func:`from_mapping` builds a config from a TOML table or a sweep grid
and names the key when it is unknown or of the wrong type.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, Union

from reprlab.errors import ReprlabError

C = TypeVar("C", bound="RunConfig")


def arg(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its help text (shown by ``--help`` and in the README).

    ``aliases=("old_name",)`` keeps an earlier spelling working as a flag and a config key.
    """
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    """Options every mode shares."""

    data: str | None = arg(
        None,
        "training images: an image folder or tar (<split>/<class>/*.jpg), CIFAR-10 python "
        "batches/tar.gz, or an .npz with images+labels; default: CIFAR-10, downloaded once",
    )
    test_data: str | None = arg(
        None, "images to predict (e.g. cifar10_test_images.npz); writes predictions.csv"
    )
    out: str | None = arg(None, "run folder (default: runs/<mode>-<time>)")
    seed: int = arg(0, "seed for the split, initialisation and sampling")
    val_fraction: float = arg(
        0.2, "fraction of the training set held out, stratified (report: 80/20)"
    )
    limit: int | None = arg(
        None, "use a stratified subset of this many training images (quick runs, tests; "
        "none: all)"
    )
    overwrite: bool = arg(False, "replace an existing run folder of another configuration")
    progress: bool = arg(True, "show progress bars (not part of the run's configuration)")

    def validate(self) -> None:
        """Raise :class:`ReprlabError` naming the flag for values that cannot work.

        Every field declared with ``choices`` is checked here, for values from the command line,
        a config file or code alike; subclasses add their own checks after ``super()``.
        """
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise ReprlabError(
                    f"--{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}"
                )
            # no setting means anything at infinity or NaN (0 is "off" where off exists)
            numbers = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ReprlabError(f"--{f.name} must be a finite number, got {value!r}")
        if not 0 <= self.seed < 2**32:  # what numpy's and torch's generators all accept
            raise ReprlabError(f"--seed must be in [0, {2**32 - 1}], got {self.seed}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ReprlabError(f"--val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 2:
            raise ReprlabError(f"--limit must be >= 2, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def positive(cfg: Any, *names: str, allow_zero: bool = False) -> None:
    """Check that numeric fields are > 0 (or >= 0); the error names the flag."""
    for n in names:
        v = getattr(cfg, n)
        if v is None:
            continue
        if not (v > 0 or (allow_zero and v == 0)):  # NaN fails too
            want = ">= 0" if allow_zero else "> 0"
            raise ReprlabError(f"--{n} must be {want}, got {v}")


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------


def _resolved_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of a config dataclass."""
    return {f.name: tp for f, tp in _resolved_fields(cls)}


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other type -> ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def parse_value(tp: Any, text: str, name: str) -> Any:
    """Parse a command-line string into the field's type; the error names the flag."""
    inner, optional = unwrap_optional(tp)
    if optional and text.lower() in ("none", "null"):
        return None
    if not text.strip():  # e.g. --data "$DATA" with DATA unset: never a silent default
        raise ReprlabError(f"--{name}: empty value" + (" (none: the default)" if optional else ""))
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if origin in (tuple, list):
            (elem,) = set(typing.get_args(inner)) - {Ellipsis}
            items = [s for s in text.replace(" ", "").split(",") if s]
            vals = [parse_value(elem, s, name) for s in items]
            return tuple(vals) if origin is tuple else vals
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
        if inner is str:
            return text
    except (ValueError, ReprlabError):
        pass
    raise ReprlabError(f"--{name}: cannot parse {text!r} as {_type_name(inner)}")


def _type_name(tp: Any) -> str:
    inner, optional = unwrap_optional(tp)
    name = getattr(inner, "__name__", str(inner))
    if typing.get_origin(inner) in (tuple, list):
        name = f"comma-separated list of {typing.get_args(inner)[0].__name__}"
    return f"{name} or none" if optional else name


def check_value(tp: Any, value: Any, where: str) -> Any:
    """Check a value from TOML/JSON against the field's type; the error names the key."""
    inner, optional = unwrap_optional(tp)
    if value is None and optional:
        return None
    origin = typing.get_origin(inner)
    ok = False
    if inner is bool:
        ok = isinstance(value, bool)
    elif inner is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif inner is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif inner is str:
        ok = isinstance(value, str)
    elif origin in (tuple, list):
        elem = typing.get_args(inner)[0]
        if not isinstance(value, (list, tuple)):  # one number where a list is expected
            value = [value]
        value = [check_value(elem, v, where) for v in value]
        value = tuple(value) if origin is tuple else value
        ok = True
    if not ok:
        raise ReprlabError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def field_name(cls: type, key: str) -> str | None:
    """The field ``key`` names in ``cls`` (kebab-case and aliases accepted), or None."""
    k = key.strip().lstrip("-").replace("-", "_")
    for f in dataclasses.fields(cls):
        if k == f.name or k in f.metadata.get("aliases", ()):
            return f.name
    return None


def from_mapping(
    cls: type[C], mapping: dict[str, Any], where: str = "config", base: C | None = None
) -> C:
    """Build ``cls`` from a dict (TOML table, JSON), starting from ``base`` or the defaults."""
    fields = field_types(cls)
    values = dataclasses.asdict(base) if base is not None else {}
    for key, value in mapping.items():
        k = field_name(cls, key)
        if k is None:
            raise ReprlabError(f"{where}: unknown key {key!r}")
        values[k] = check_value(fields[k], value, f"{where}: key {key!r}")
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# argparse
# ---------------------------------------------------------------------------------------------


class ArgParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one :class:`ReprlabError` line (exit 2)
    instead of printing its usage, e.g. ``softmax: unrecognized arguments: --resume``."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("reprlab").strip()
        raise ReprlabError(f"{where}: {message}" if where else message)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, helps: dict[str, str] | None = None
) -> None:
    """Add one flag per field of ``cls``; a flag that is not given leaves no attribute, so that
    explicit flags can be told apart (``--limit none`` included).

    ``helps`` replaces the help text of some fields (a command that gives them another meaning),
    over the class's own ``FLAG_HELP`` (flags whose defaults come from elsewhere).
    """
    helps = {**getattr(cls, "FLAG_HELP", {}), **(helps or {})}
    for f, tp in _resolved_fields(cls):
        names = []
        for name in (f.name, *f.metadata.get("aliases", ())):
            names.append(f"--{name}")
            if "_" in name:
                names.append(f"--{name.replace('_', '-')}")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # None defaults are explained by the help text itself ("default: CIFAR-10, ...")
        help_ = helps.get(f.name, f.metadata.get("help", ""))
        if default is not None and f.name not in helps:
            help_ += f" (default: {_show(default)})"
        inner, _ = unwrap_optional(tp)
        choices = f.metadata.get("choices")
        if inner is bool:
            parser.add_argument(
                *names,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_,
            )
        else:
            parser.add_argument(
                *names,
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar="{" + ",".join(map(str, choices)) + "}" if choices else f.name.upper(),
                type=lambda s, tp=tp, n=f.name: parse_value(tp, s, n),
                choices=choices,
                help=help_,
            )


def _show(v: Any) -> str:
    """A default as the help shows it, in a form the flag takes: numbers as ``0.5,1,2``; names
    after ", " so that a long list wraps between items, not inside a name (the flag accepts
    the spaces)."""
    if isinstance(v, (tuple, list)):
        if v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return ",".join(str(x) if isinstance(x, int) else f"{x:g}" for x in v)
        return ", ".join(map(str, v)) or "none"
    return str(v)


def explicit_args(ns: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields the user actually gave on the command line (``--limit none`` too)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(ns).items() if k in names}


def build(cls: type[C], overrides: dict[str, Any], base: C | None = None) -> C:
    """Defaults (or ``base``, e.g. a preset) updated with already-typed ``overrides``; validated."""
    cfg = dataclasses.replace(base, **overrides) if base is not None else cls(**overrides)
    cfg.validate()
    return cfg
