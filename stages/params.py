"""params.yaml: one section per stage, read into frozen dataclasses.

    tasks: [...]        seeds: [...]          the task x seed matrix (dvc.yaml's foreach/matrix)
    model:    convert   data:     download    tokenize: tokenize
    finetune: finetune  evaluate: evaluate    report:   report

Every key of a section must be present (params.yaml is the one place defaults live) and no other key
may be: an unknown, missing or ill-typed key is a ``ParamsError`` naming it (``finetune.learning_rate``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

DEFAULT_PARAMS = Path("params.yaml")
T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is missing a key, has an unknown one, or a value of the wrong type or range."""


def _at_least(low: float) -> dict:
    return {"min": low}


def _above(low: float) -> dict:
    return {"gt": low}


def _proportion() -> dict:
    return {"min": 0.0, "lt": 1.0}


@dataclass(frozen=True)
class ModelParams:
    """Section ``model`` (the convert stage)."""

    name: str  # a shortcut name (bert-base-uncased), the packaged minilm-l6-h384-uncased, or a folder


@dataclass(frozen=True)
class BuiltinDataParams:
    """Section ``data.builtin``: the size of the generated offline datasets."""

    train_examples: int = field(metadata=_at_least(1))
    dev_examples: int = field(metadata=_at_least(1))
    seed: int


@dataclass(frozen=True)
class DataParams:
    """Section ``data`` (the download stage)."""

    source: Literal["builtin", "download", "local"]
    local_dir: str  # for source local: a task's folder, or a folder holding one folder per task
    mirror: str  # for source download: "" for the official addresses, else a URL prefix serving <task>/<file>
    builtin: BuiltinDataParams


@dataclass(frozen=True)
class TokenizeParams:
    """Section ``tokenize``."""

    max_seq_length: int = field(metadata=_at_least(8))
    doc_stride: int = field(metadata=_at_least(1))  # SQuAD: tokens between window starts
    max_query_length: int = field(metadata=_at_least(1))  # SQuAD: question tokens kept
    do_lower_case: bool


@dataclass(frozen=True)
class FinetuneParams:
    """Section ``finetune``: the engine's TrainConfig fields plus the process count."""

    nproc: int = field(metadata=_at_least(1))
    epochs: float = field(metadata=_above(0.0))
    learning_rate: float = field(metadata=_above(0.0))
    global_batch_size: int = field(metadata=_at_least(1))
    grad_accum_steps: int = field(metadata=_at_least(1))
    warmup_proportion: float = field(metadata=_proportion())
    weight_decay: float = field(metadata=_at_least(0.0))
    max_grad_norm: float = field(metadata=_at_least(0.0))
    precision: Literal["fp32", "fp16", "bf16"]
    loss_scale: float = field(metadata=_at_least(0.0))  # fp16: 0 = dynamic, else a static scale
    optimizer: Literal["bertadam", "adamw"]
    schedule: Literal["warmup_linear", "warmup_cosine", "warmup_constant", "none"]
    log_every: int = field(metadata=_at_least(1))
    checkpoint_every: int = field(metadata=_at_least(0))  # optimizer steps; 0 = none
    resume: bool
    group_by_length: bool
    num_workers: int = field(metadata=_at_least(0))


@dataclass(frozen=True)
class EvaluateParams:
    """Section ``evaluate``."""

    batch_size: int = field(metadata=_at_least(1))
    precision: Literal["fp32", "fp16", "bf16"]
    n_best_size: int = field(metadata=_at_least(1))  # SQuAD
    max_answer_length: int = field(metadata=_at_least(1))  # SQuAD, in tokens
    null_score_diff_threshold: float  # SQuAD v2.0
    baseline_seed: int  # seeds the random head of the untrained baseline


@dataclass(frozen=True)
class ReportParams:
    """Section ``report``."""

    majority_tolerance: float = field(metadata=_at_least(0.0))  # points: a run this close to majority is flagged


@dataclass(frozen=True)
class RunMatrix:
    """The top-level ``tasks`` and ``seeds`` lists."""

    tasks: list[str]
    seeds: list[int]


SECTIONS: dict[str, type] = {
    "model": ModelParams,
    "data": DataParams,
    "tokenize": TokenizeParams,
    "finetune": FinetuneParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}

# YAML 1.1 (PyYAML) reads 5e-5 as a string; DVC reads params with YAML 1.2, where it is a float.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def read_params_file(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Parse params.yaml (floats as YAML 1.2 reads them, like DVC).

    Raises:
        ParamsError: the file is missing, not UTF-8, not YAML, has a key written twice in one mapping
            (DVC refuses those too) or is not a mapping at the top; one line naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(f"{path}: line {line}: not UTF-8 (byte 0x{data[err.start]:02x}); save it as UTF-8") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_repeated_keys(node, "", path)
        values = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        raise ParamsError(f"{path}: {_yaml_error_line(err)}") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    finally:
        loader.dispose()
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return values


def _yaml_error_line(err: yaml.MarkedYAMLError) -> str:
    """PyYAML's multi-line message as one line: where, what, and where the broken construct began."""
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    began = ""
    if err.context and err.context_mark and err.problem_mark and err.context_mark.line != err.problem_mark.line:
        began = f"; {err.context} at line {err.context_mark.line + 1}"
    return f"{where}not valid YAML ({err.problem or err.context}{began})"


def _refuse_repeated_keys(node: yaml.Node, prefix: str, path: Path) -> None:
    """PyYAML keeps the last of two equal keys; a silent override of a param is refused instead."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeated_keys(item, f"{prefix}[{i}]", path)
    if not isinstance(node, yaml.MappingNode):
        return
    seen = set()
    for key_node, value_node in node.value:
        key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise ParamsError(f"{path}: line {key_node.start_mark.line + 1}: key {key} is written twice")
            seen.add(key_node.value)
        _refuse_repeated_keys(value_node, key, path)


def load_section(section: str, path: str | os.PathLike = DEFAULT_PARAMS) -> Any:
    """Read one stage's section of params.yaml into its frozen dataclass.

    Args:
        section: a key of ``SECTIONS`` (model, data, tokenize, finetune, evaluate, report).
        path: the params file.
    Returns:
        The dataclass instance.
    Raises:
        ParamsError: naming the file and the dotted key that is missing, unknown or ill-typed.
    """
    cls = SECTIONS[section]
    values = read_params_file(path)
    if section not in values:
        raise ParamsError(f"{path}: section {section!r} is missing")
    return build(cls, values[section], section, path)


def load_matrix(path: str | os.PathLike = DEFAULT_PARAMS) -> RunMatrix:
    """Read the top-level ``tasks`` and ``seeds`` lists (non-empty, no repeats)."""
    values = read_params_file(path)
    matrix = build(RunMatrix, {k: values.get(k) for k in ("tasks", "seeds")}, "", path)
    for key in ("tasks", "seeds"):
        items = getattr(matrix, key)
        if not items:
            raise ParamsError(f"{path}: {key}: expected a non-empty list")
        if len(set(items)) != len(items):
            raise ParamsError(f"{path}: {key}: repeated entries in {items}")
    return matrix


def build(cls: type[T], values: Any, prefix: str, path: str | os.PathLike = DEFAULT_PARAMS) -> T:
    """Check `values` against the dataclass `cls` field by field and construct it.

    Args:
        cls: a dataclass whose fields are int, float, str, bool, Literal[...], list[int|str] or dataclasses.
        values: the mapping read from YAML.
        prefix: the dotted name of the section, for messages.
        path: the params file, for messages.
    Returns:
        The instance.
    """
    where = f"{prefix}." if prefix else ""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: {prefix or 'params'}: expected a mapping, got {_show(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ParamsError(
            f"{path}: unknown key {where}{unknown[0]} (known keys of {prefix or 'the top level'}: "
            f"{', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for name, f in fields.items():
        key = f"{where}{name}"
        if name not in values:
            raise ParamsError(f"{path}: key {key} is missing")
        out[name] = _check(hints[name], values[name], key, path)
        _check_range(f.metadata, out[name], key, path)
    return cls(**out)


def _check(hint: Any, value: Any, key: str, path: str | os.PathLike) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, path)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ParamsError(f"{path}: {key}: expected one of {', '.join(map(str, choices))}, got {_show(value)}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ParamsError(f"{path}: {key}: expected a list of {item.__name__}, got {_show(value)}")
        return [_check(item, v, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{path}: {key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{path}: {key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{path}: {key}: expected a number, got {_show(value)}")
        if not math.isfinite(value):  # NaN passes every range check; inf is no setting either
            raise ParamsError(f"{path}: {key}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{path}: {key}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"params type {hint!r} of {key} is not supported")  # a programming error


def _check_range(metadata: Any, value: Any, key: str, path: str | os.PathLike) -> None:
    if "min" in metadata and value < metadata["min"]:
        raise ParamsError(f"{path}: {key}: expected at least {metadata['min']}, got {value!r}")
    if "max" in metadata and value > metadata["max"]:
        raise ParamsError(f"{path}: {key}: expected at most {metadata['max']}, got {value!r}")
    if "lt" in metadata and value >= metadata["lt"]:
        raise ParamsError(f"{path}: {key}: expected less than {metadata['lt']}, got {value!r}")
    if "gt" in metadata and value <= metadata["gt"]:
        raise ParamsError(f"{path}: {key}: expected more than {metadata['gt']}, got {value!r}")


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing"
