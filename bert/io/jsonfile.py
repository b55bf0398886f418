"""The one way the project reads a JSON file: every failure is one line naming the file.

Configs, manifests, metadata, fingerprints, summaries, SQuAD data: a missing, damaged or wrong-shaped file
is a ValueError (or the caller's subclass, e.g. a DataFormatError) such as

    data/features/squad1/dev/metadata.json:1:38: not valid JSON (Expecting ',' delimiter)
    models/finetuned/mrpc/seed1/training.json: expected a JSON object, got list
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

Shape = Union[type, tuple[type, ...], None]
_NAMES = {dict: "a JSON object", list: "a JSON list", str: "a JSON string", int: "a JSON integer",
          float: "a JSON number", bool: "true or false", type(None): "null"}


def read_json(path: str | os.PathLike, expect: Shape = None, *, error: type[ValueError] = ValueError) -> Any:
    """Parse a UTF-8 JSON file.

    Args:
        path: the file.
        expect: the type (or types) the top-level value must have, e.g. dict; None takes any.
        error: the ValueError subclass to raise (a reader's own, e.g. DataFormatError).
    Returns:
        The parsed value.
    Raises:
        `error`: missing, a folder, not UTF-8, not JSON, nested beyond reason, or not of type `expect`; one line
            that starts with the file's path.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, expected a JSON file") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    return parse_json(text, str(path), expect, error=error)


def parse_json(text: str, where: str, expect: Shape = None, *, error: type[ValueError] = ValueError,
               first_line: Optional[int] = None) -> Any:
    """Parse JSON text read from `where` (a file, ``-`` for stdin), with read_json's one-line errors.

    Args:
        text: the JSON text.
        where: what the errors name (the file the text came from).
        expect: as read_json's.
        error: as read_json's.
        first_line: the line of `where` the text is (a JSON Lines file's line): named in every error.
    Returns:
        The parsed value.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{where}:{err.lineno + (first_line or 1) - 1}:{err.colno}: not valid JSON ({err.msg})") from None
    except RecursionError:  # e.g. 100 000 nested brackets
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    check_shape(value, expect, where if first_line is None else f"{where}:{first_line}", error)
    return value


def read_json_object(path: str | os.PathLike, *, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """A JSON file holding one object (a config, a manifest, a summary): read_json with expect=dict."""
    return read_json(path, dict, error=error)


def check_shape(value: Any, expect: Shape, where: str, error: type[ValueError] = ValueError) -> None:
    """Raise `error` naming `where` when `value` is not of type `expect` (bool is never taken for a number)."""
    if expect is None:
        return
    kinds = expect if isinstance(expect, tuple) else (expect,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return
    wanted = " or ".join(_NAMES.get(k, k.__name__) for k in kinds)
    raise error(f"{where}: expected {wanted}, got {_describe(value)}")


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__
