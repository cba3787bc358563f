"""Annotation-driven checks for the package's dataclass configs (the one home of this machinery).

A config is a ``@dataclass`` whose field annotations say what each key accepts; :func:`check_type`
reads them, :func:`check_known` rejects unknown keys with a close-match suggestion.
"""
import dataclasses
import difflib
import typing
from typing import Any, Dict, List, Union

__all__ = ["field_names", "field_type", "check_known", "check_type"]


def field_names(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_type(cls, name):
    return typing.get_type_hints(cls)[name]


def check_known(key, known, where) -> None:
    if key not in known:
        close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(map(str, known))}"
        raise ValueError(f"{where}: unknown key {key!r}{hint}")


def check_type(name: str, value: Any, annotation) -> None:
    if not _matches(value, annotation):
        raise TypeError(
            f"config: {name} must be {_describe(annotation)}, got {value!r} ({type(value).__name__})"
        )


def _matches(value, annotation) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Union:
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, List):
        return isinstance(value, (list, tuple))
    if origin in (dict, Dict):
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is Union:
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))
