"""Annotation-driven checks for the package's dataclass configs (the one home of this machinery).

A config is a ``@dataclass`` whose field annotations say what each key accepts; :func:`check_type`
reads them, :func:`check_known` rejects unknown keys with a close-match suggestion.
"""
import copy
import dataclasses
import difflib
import functools
import numbers
import typing
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Union

__all__ = ["field_names", "field_type", "check_known", "check_keys", "check_type", "renamed_keys",
           "renamed_arguments", "check_fields", "DictConfig"]


def field_names(cls) -> List[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_type(cls, name):
    return typing.get_type_hints(cls)[name]


def check_known(key, known, where) -> None:
    if key not in known:
        close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(map(str, known))}"
        raise ValueError(f"{where}: unknown key {key!r}{hint}")


def check_keys(keys: Iterable, known, where) -> None:
    """Reject every unknown key of a mapping at once, with a close-match suggestion for each."""
    unknown = [k for k in keys if k not in known]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
        if close:
            hints.append(f"did you mean {close[0]!r} for {key!r}?")
    hint = " ".join(hints) if hints else f"known keys: {', '.join(sorted(map(str, known)))}"
    raise ValueError(f"{where}: unknown keys {sorted(map(str, unknown))}; {hint}")


def renamed_keys(mapping: Mapping[str, Any], renames: Mapping[str, str], where: str) -> Dict[str, Any]:
    """A copy of ``mapping`` with deprecated key names replaced by their new names.

    Each old name found raises a :class:`DeprecationWarning`; giving both the old and the new
    name is a ``ValueError``.
    """
    out = dict(mapping)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where}: give {new!r} only ({old!r} is its deprecated name)")
        warnings.warn(f"{where}: {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
        out[new] = out.pop(old)
    return out


def renamed_arguments(**renames: str):
    """Decorator: keyword arguments given under a deprecated name (``old="new"``) still work.

    Each one raises a :class:`DeprecationWarning` (see :func:`renamed_keys`); the signature shown by
    ``inspect.signature`` and ``help`` is the new one.
    """

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **renamed_keys(kwargs, renames, function.__qualname__))

        return wrapper

    return decorate


def check_fields(cls, mapping: Mapping[str, Any], where: str = "config", error: type = TypeError) -> None:
    """Check the type of every entry of ``mapping`` against the annotations of dataclass ``cls``.

    A mismatch raises ``error`` (``TypeError`` unless a config documents another) naming the key.
    """
    for key, value in mapping.items():
        check_type(key, value, field_type(cls, key), where, error)


class DictConfig:
    """Base of the package's dataclass configs: the shared ends of ``from_dict`` and ``to_dict``.

    A subclass lists deprecated key names in ``RENAMES`` (old -> new), checks its keys and types
    between :meth:`_prepared` and :meth:`_built`, and puts value checks in ``validate``.
    """

    RENAMES: Mapping[str, str] = {}

    @classmethod
    def _prepared(cls, config) -> Dict[str, Any]:
        """A deep copy of the mapping ``config`` with deprecated names replaced (``TypeError`` otherwise)."""
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a mapping of keys to values, got {type(config).__name__}")
        return renamed_keys(copy.deepcopy(config), cls.RENAMES, "config")

    @classmethod
    def _built(cls, kwargs: Dict[str, Any]):
        result = cls(**kwargs)
        result.validate()
        return result

    def validate(self) -> None:
        """Check values that types alone do not constrain (nothing here)."""

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)


def check_type(name: str, value: Any, annotation, where: str = "config", error: type = TypeError) -> None:
    if not _matches(value, annotation):
        raise error(
            f"{where}: {name} must be {_describe(annotation)}, got {value!r} ({type(value).__name__})"
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
    if annotation is int:  # numbers.Integral: numpy integers too
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
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
    name = getattr(annotation, "__name__", str(annotation))
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
