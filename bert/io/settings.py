"""Settings dataclasses whose fields carry their own checks: the type from the annotation, the range and the
choices from the field's metadata. One check serves the engine's TrainConfig (in its ``__post_init__``) and
every section of the pipeline's params.yaml (stages/_lib/params.py), so a range is written once.

    @dataclass(frozen=True)
    class Example:
        epochs: float = field(default=3.0, metadata=above(0))
        precision: str = field(default="fp32", metadata=one_of("fp32", "fp16", "bf16"))

        def __post_init__(self) -> None:
            check_fields(self)      # Example(epochs=0) -> SettingError: Example.epochs: expected more than 0, got 0

Annotations understood: int, float, str, bool, list[int], list[str] and nested settings dataclasses.
Standard library only: reading settings must not import torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any


class SettingError(ValueError):
    """A setting of the wrong type or out of range: ``name`` is the field (dotted when nested), ``problem``
    what was expected and what was given."""

    def __init__(self, name: str, problem: str, owner: str = "") -> None:
        self.name, self.problem = name, problem
        super().__init__(f"{owner}.{name}: {problem}" if owner else f"{name}: {problem}")


def at_least(low: float) -> dict[str, Any]:
    return {"min": low}


def above(low: float) -> dict[str, Any]:
    return {"gt": low}


def between(low: float, high: float) -> dict[str, Any]:
    """In [low, high]."""
    return {"min": low, "max": high}


def proportion() -> dict[str, Any]:
    """In [0, 1)."""
    return {"min": 0.0, "lt": 1.0}


def one_of(*choices: Any) -> dict[str, Any]:
    return {"choices": choices}


def seed_range() -> dict[str, Any]:
    """What seeds a run: python's, numpy's (at most 2**32 - 1) and torch's generators alike."""
    return between(0, 2**32 - 1)


def check_fields(settings: Any) -> None:
    """Check every field of a settings dataclass instance (call it from ``__post_init__``).

    Raises:
        SettingError: naming the class and the field.
    """
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        try:
            check_value(hints[f.name], f.metadata, getattr(settings, f.name), f.name)
        except SettingError as err:
            raise SettingError(err.name, err.problem, type(settings).__name__) from None


def check_value(hint: Any, metadata: Any, value: Any, name: str) -> Any:
    """Check one value against its annotation and metadata.

    Args:
        hint: the field's type (int, float, str, bool, list[int], list[str], or a dataclass).
        metadata: the field's metadata: min, gt, lt, max (ranges) and choices.
        value: the value given.
        name: the field's name or dotted key, for the error.
    Returns:
        The value; for a float field a float (an integer such as ``3`` is a number too).
    Raises:
        SettingError: the wrong type, out of range, or not one of the choices.
    """
    value = _check_type(hint, value, name)
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise SettingError(name, f"expected one of {', '.join(map(str, choices))}, got {_show(value)}")
    if "min" in metadata and value < metadata["min"]:
        raise SettingError(name, f"expected at least {metadata['min']}, got {value!r}")
    if "max" in metadata and value > metadata["max"]:
        raise SettingError(name, f"expected at most {metadata['max']}, got {value!r}")
    if "lt" in metadata and value >= metadata["lt"]:
        raise SettingError(name, f"expected less than {metadata['lt']}, got {value!r}")
    if "gt" in metadata and value <= metadata["gt"]:
        raise SettingError(name, f"expected more than {metadata['gt']}, got {value!r}")
    return value


def _check_type(hint: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            raise SettingError(name, f"expected {hint.__name__}, got {_show(value)}")
        return value
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SettingError(name, f"expected a list of {item.__name__}, got {_show(value)}")
        return [_check_type(item, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(name, f"expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(name, f"expected a number, got {_show(value)}")
        if not math.isfinite(value):  # NaN passes every range check; inf is no setting either
            raise SettingError(name, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingError(name, f"expected a string, got {_show(value)}")
        return value
    raise TypeError(f"settings type {hint!r} of {name} is not supported")  # a programming error


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing"
