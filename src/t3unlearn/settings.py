"""Strict settings: a dataclass filled from a dict (a JSON file's content) that accepts no unknown key.

A typo in a settings file is an error naming the known keys (and the closest one), never a setting
silently ignored; a value of the wrong type is an error naming the type expected::

    >>> from_dict(Selection, {"utility_tolerence": 0.1}, where="selection")      # doctest: +SKIP
    ConfigError: selection: unknown key 'utility_tolerence' (did you mean 'utility_tolerance'?); known: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Iterable, TypeVar

from t3unlearn.errors import ConfigError, T3Error

T = TypeVar("T")


def check_keys(data: dict, known: Iterable[str], *, where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``data`` not in ``known`` (comments, keys starting
    with ``_``, are allowed)."""
    known = list(known)
    for key in data:
        if isinstance(key, str) and key.startswith("_"):
            continue
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; known: {', '.join(known) or 'none'}.")


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is not None:
        hint = origin
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "an object",
             list: "a list"}
    return names.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_types(cls: type, values: dict, *, where: str) -> None:
    """Raise :class:`ConfigError` when a value does not have its field's annotated type."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {key} must be {_type_name(hints[key])}, not {value!r}.")


def from_dict(cls: type[T], data: Any, *, where: str) -> T:
    """``cls(**data)`` for a dataclass ``cls``, after checking that ``data`` is an object whose keys are all
    fields (``_comment`` keys aside) and whose values have the fields' types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object (a JSON {{...}}), not {type(data).__name__}.")
    names = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
    check_keys(data, names, where=where)
    values = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("_"))}
    check_types(cls, values, where=where)
    return cls(**values)


def reject_unknown(given: Iterable[str], known: Iterable[str], *, what: str = "setting", owner: str | None = None,
                   error: type[T3Error] = ConfigError) -> None:
    """Raise ``error`` naming every name of ``given`` not in ``known``, and the known ones: ``unknown setting(s) x;
    known: a, b`` or, with an ``owner``, ``NPO has no setting(s) x; it takes a, b``. Names are listed as given."""
    known = list(known)
    bad = sorted(str(k) for k in set(given) - set(known))
    if not bad:
        return
    if owner is not None:
        raise error(f"{owner} has no {what}(s) {', '.join(bad)}; it takes {', '.join(map(str, known)) or 'none'}.")
    raise error(f"unknown {what}(s) {', '.join(bad)}; known: {', '.join(map(str, known)) or 'none'}.")


class TrainingSettings:
    """A mixin for the settings dataclass of a training loop: :meth:`from_dict` refuses unknown names, and a
    ``steps``, ``batch_size`` or ``lr`` field it has must be positive."""

    @classmethod
    def from_dict(cls, d: dict | None):
        d = dict(d or {})
        reject_unknown(d, sorted(f.name for f in dataclasses.fields(cls)), error=T3Error)
        cfg = cls(**d)
        if getattr(cfg, "steps", 1) < 1 or getattr(cfg, "batch_size", 1) < 1 or getattr(cfg, "lr", 1) <= 0:
            raise T3Error("steps and batch_size must be >= 1 and lr > 0.")
        return cfg


__all__ = ["TrainingSettings", "check_keys", "check_types", "from_dict", "reject_unknown"]
