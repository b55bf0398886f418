"""Parameter overrides written into params.yaml, comments and layout kept (as `dvc exp run --set-param` does).

    apply_overrides("params.yaml", {"finetune.learning_rate": 5e-5, "tasks": ["mrpc"]})

Why params.yaml itself: DVC decides what re-runs from params.yaml and records the values in dvc.lock,
so writing the override there keeps params.yaml, dvc.lock and the outputs in agreement, and a later
plain `dvc repro` sees the same pipeline. `git diff params.yaml` shows what a run changed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from bert.io.fileio import atomic_write_text


def parse_assignment(text: str) -> tuple[str, Any]:
    """"finetune.learning_rate=5e-5" -> ("finetune.learning_rate", 5e-05): the value is read as YAML 1.2.

    Raises:
        ValueError: no "=" or an empty key.
    """
    from ruamel.yaml import YAML

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r}: expected KEY=VALUE, e.g. finetune.learning_rate=5e-5")
    parsed = YAML(typ="safe", pure=True).load(value) if value.strip() else ""
    return key.strip(), parsed


def apply_overrides(path: str | os.PathLike, overrides: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Set dotted keys of a params file in place (written atomically).

    Args:
        path: params.yaml.
        overrides: dotted key -> new value; every key must already exist in the file.
    Returns:
        key -> (old value, new value) for the keys whose value changed.
    Raises:
        ValueError: a key that is not in the file (naming the file and the key), or a file that is not YAML.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not overrides:
        return {}
    yaml = YAML()  # round-trip: comments and key order survive
    yaml.preserve_quotes = True
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as err:
        raise ValueError(f"{path}: cannot read params ({err})") from None
    changed: dict[str, tuple[Any, Any]] = {}
    for key, value in overrides.items():
        node, parts = doc, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the top level"
                raise ValueError(f"{path}: override {key!r}: no key {part!r} under {where}")
            if depth < len(parts) - 1:
                node = node[part]
        old = node[parts[-1]]
        if old != value:
            node[parts[-1]] = value
            changed[key] = (old, value)
    if changed:
        buffer = io.StringIO()
        yaml.dump(doc, buffer)
        atomic_write_text(path, buffer.getvalue())
    return changed
