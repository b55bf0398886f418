"""params.yaml: one section per stage, read as DVC reads it and checked into frozen dataclasses.

    tasks: [...]        seeds: [...]          the task x seed matrix (dvc.yaml's foreach/matrix)
    model:    convert   data:     download    tokenize: tokenize
    finetune: finetune  evaluate: evaluate    report:   report
    (pretrain/params.yaml: model, corpus: builtin_corpus, instances: pretrain_data, pretrain: pretrain)

The file is parsed with DVC's own parser (ruamel.yaml's safe loader, YAML 1.2; see DVC's
dvc/utils/serialize/_yaml.py), so a value is the same for DVC, the stage and MLflow: ``1:30`` is the text
"1:30" (YAML 1.1 read it as 90), ``010`` is 10, ``yes`` and ``on`` are text, ``5e-5`` is a number.

Each stage declares its section as a frozen dataclass whose fields carry their checks (bert.io.settings),
e.g. ``stages.tokenize.TokenizeParams``; the training sections (finetune, pretrain) are the engine's
TrainConfig itself (stages._lib.training.TrainingParams), so a range is written once. Every key of a
section must be present (params.yaml is the one place defaults live) and no other key may be: an unknown,
missing or ill-typed key is a ``ParamsError`` naming it (``finetune.learning_rate: ...``).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bert.io.settings import SettingError, check_value, seed_range

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_PRETRAIN_PARAMS = Path("pretrain") / "params.yaml"
MAX_VALUES = 100_000  # values a params file may expand to, each alias counted as often as it is used
T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is missing a key, has an unknown one, or a value of the wrong type or range."""


@dataclass(frozen=True)
class RunMatrix:
    """The top-level ``tasks`` and ``seeds`` lists."""

    tasks: list[str]
    seeds: list[int]


def read_params_file(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Parse a params file as DVC does (YAML 1.2).

    Raises:
        ParamsError: the file is missing, not UTF-8, not YAML, has a key written twice in one mapping,
            expands (through aliases) to more than MAX_VALUES values or into itself, or is not a mapping at
            the top; one line naming the file and line.
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
    yaml = YAML(typ="safe")  # what DVC's parse_yaml makes: the values DVC records and interpolates
    try:
        node = yaml.compose(text)
        if node is not None:
            _check_nodes(node, path)
        values = yaml.load(text)
    except MarkedYAMLError as err:
        raise ParamsError(f"{path}: {_yaml_error_line(err)}") from None
    except YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return values


def _yaml_error_line(err: MarkedYAMLError) -> str:
    """The parser's multi-line message as one line: where, what, and where the broken construct began."""
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    began = ""
    if err.context and err.context_mark and err.problem_mark and err.context_mark.line != err.problem_mark.line:
        began = f"; {err.context} at line {err.context_mark.line + 1}"
    return f"{where}not valid YAML ({err.problem or err.context}{began})"


def _check_nodes(root: Node, path: Path) -> None:
    """Every node of the composed file once (an alias is a node met again, not a copy of one): a key written
    twice in a mapping is refused with its dotted name and line (DVC refuses it too, less precisely), and so is
    a file whose aliases expand it past MAX_VALUES values (an alias bomb: each reader that walks the values,
    DVC's included, would take hours) or into itself."""
    size: dict[int, int] = {}  # id(node) -> the values it expands to
    stack: list[tuple[Node, str, bool]] = [(root, "", False)]
    open_nodes: set[int] = set()  # on the path from the root: met again below itself, a node contains itself
    while stack:
        node, where, expanded = stack.pop()
        if id(node) in size:
            continue
        children = _children(node, where)
        if not expanded:
            if id(node) in open_nodes:
                raise ParamsError(f"{path}: line {node.start_mark.line + 1}: {where or 'the file'} contains itself "
                                  "(an alias of a node inside that node)")
            open_nodes.add(id(node))
            if isinstance(node, MappingNode):
                _refuse_repeated_keys(node, where, path)
            stack.append((node, where, True))
            stack.extend((child, name, False) for child, name in children if id(child) not in size)
            continue
        open_nodes.discard(id(node))
        size[id(node)] = 1 + sum(size[id(child)] for child, _ in children)
        if size[id(node)] > MAX_VALUES:
            reached = where or "the file"
            raise ParamsError(f"{path}: line {node.start_mark.line + 1}: the value there (reached as {reached}) expands "
                              f"to more than {MAX_VALUES} values through its aliases: a YAML alias bomb? Write the "
                              "values out, or alias fewer")


def _children(node: Node, where: str) -> list[tuple[Node, str]]:
    """A node's children and their dotted names (a mapping's values, and its keys when they are not scalars)."""
    if isinstance(node, SequenceNode):
        return [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
    found: list[tuple[Node, str]] = []
    if isinstance(node, MappingNode):
        for key, value in node.value:
            label = key.value if isinstance(key, ScalarNode) else "?"
            name = f"{where}.{label}" if where else str(label)
            if not isinstance(key, ScalarNode):
                found.append((key, name))
            found.append((value, name))
    return found


def _refuse_repeated_keys(node: MappingNode, where: str, path: Path) -> None:
    seen = set()
    for key_node, _ in node.value:
        if isinstance(key_node, ScalarNode):
            if key_node.value in seen:
                key = f"{where}.{key_node.value}" if where else str(key_node.value)
                raise ParamsError(f"{path}: line {key_node.start_mark.line + 1}: key {key} is written twice")
            seen.add(key_node.value)


def load_section(section: str, cls: type[T], path: str | os.PathLike = DEFAULT_PARAMS) -> T:
    """Read one stage's section of a params file into its frozen dataclass.

    Args:
        section: the section's key (model, data, tokenize, finetune, evaluate, report; corpus, ...).
        cls: the stage's dataclass for it (e.g. stages.tokenize.TokenizeParams).
        path: the params file.
    Returns:
        The dataclass instance.
    Raises:
        ParamsError: naming the file and the dotted key that is missing, unknown or ill-typed.
    """
    values = read_params_file(path)
    if section not in values:
        raise ParamsError(f"{path}: section {section!r} is missing")
    return build(cls, values[section], section, path)


def load_matrix(path: str | os.PathLike = DEFAULT_PARAMS) -> RunMatrix:
    """Read the top-level ``tasks`` and ``seeds`` lists (non-empty, no repeats, seeds that seed a run)."""
    values = read_params_file(path)
    matrix = build(RunMatrix, {k: values.get(k) for k in ("tasks", "seeds")}, "", path)
    for key in ("tasks", "seeds"):
        items = getattr(matrix, key)
        if not items:
            raise ParamsError(f"{path}: {key}: expected a non-empty list")
        if len(set(items)) != len(items):
            repeated = sorted({str(item) for item in items if items.count(item) > 1})
            raise ParamsError(f"{path}: {key}: repeated entries in {items} ({', '.join(repeated)}): each runs once")
    for i, seed in enumerate(matrix.seeds):
        try:
            check_value(int, seed_range(), seed, f"seeds[{i}]")
        except SettingError as err:
            raise ParamsError(f"{path}: {err}") from None
    return matrix


def section_keys(cls: type) -> list[str]:
    """The keys a section of class `cls` holds: its fields, but those it says params files leave out
    (``NOT_IN_PARAMS``: e.g. the engine's own settings, or the seed a command line gives)."""
    left_out = getattr(cls, "NOT_IN_PARAMS", ())
    return [f.name for f in dataclasses.fields(cls) if f.name not in left_out]


def section_values(params: Any) -> dict[str, Any]:
    """A section dataclass as the mapping of the params file it was read from (nested sections as mappings)."""
    return {name: _plain(getattr(params, name)) for name in section_keys(type(params))}


def _plain(value: Any) -> Any:
    return section_values(value) if dataclasses.is_dataclass(value) else value


def build(cls: type[T], values: Any, prefix: str, path: str | os.PathLike = DEFAULT_PARAMS) -> T:
    """Check `values` against the dataclass `cls` key by key and construct it.

    Args:
        cls: a dataclass whose fields bert.io.settings can check (int, float, str, bool, list[int|str],
            nested dataclasses), ranges and choices in their metadata.
        values: the mapping read from YAML.
        prefix: the dotted name of the section, for messages.
        path: the params file, for messages.
    Returns:
        The instance.
    """
    where = f"{prefix}." if prefix else ""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: {prefix or 'params'}: expected a mapping, got {_show(values)}")
    keys = section_keys(cls)
    unknown = sorted(set(values) - set(keys), key=str)
    if unknown:
        raise ParamsError(f"{path}: unknown key {where}{unknown[0]} (known keys of {prefix or 'the top level'}: "
                          f"{', '.join(keys)})")
    hints = typing.get_type_hints(cls)
    metadata = {f.name: f.metadata for f in dataclasses.fields(cls)}
    out = {}
    for name in keys:
        key = f"{where}{name}"
        if name not in values:
            raise ParamsError(f"{path}: key {key} is missing")
        if dataclasses.is_dataclass(hints[name]):
            out[name] = build(hints[name], values[name], key, path)
            continue
        try:
            out[name] = check_value(hints[name], metadata[name], values[name], key)
        except SettingError as err:
            raise ParamsError(f"{path}: {err}") from None
    try:
        return cls(**out)
    except SettingError as err:  # a check across keys (TrainConfig: loss_scale is for fp16 only)
        raise ParamsError(f"{path}: {where}{err.name}: {err.problem}") from None


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "nothing"
