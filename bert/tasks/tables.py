"""Rows of a table file with a header (TSV, CSV) or of a JSON Lines file, each with its line number, checked
as they are read: a ragged row, a bad CSV quote or a line that is not a JSON object names the file and line.

    TSV    tab-separated; quotes are text (as GLUE's files have them: ``"100 percent"``)
    CSV    comma-separated, with CSV's quoting
    JSONL  one object per line

``bert predict``'s inputs (bert.inference.inputs) and your own datasets (bert.tasks.owndata) read through here.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from bert.tasks.records import DataFormatError

TABLE_SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Rows:
    """Raw rows of one source: (line number, fields) for tables and JSON, (line number, parts) for lines."""

    source: str
    kind: str  # "table" or "lines"
    rows: list[tuple[int, Any]] = field(default_factory=list)
    header_line: int = 1


def read_jsonl(source: str, text: str) -> Rows:
    """The objects of a JSON Lines text (blank lines skipped); a line that is not an object names its line."""
    rows = Rows(source, "table")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{source}:{n}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(value, dict):
            raise DataFormatError(f"{source}:{n}: expected a JSON object, got {type(value).__name__}")
        rows.rows.append((n, value))
    return rows


def read_table(source: str, text: str, fmt: str) -> Rows:
    """The rows of a TSV or CSV text as header -> cell mappings (blank rows skipped).

    Raises:
        DataFormatError: no header, a row with another number of fields than the header, a CSV error;
            naming the file and line.
    """
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    rows = Rows(source, "table")
    header: Optional[list[str]] = None
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header, rows.header_line = [cell.strip() for cell in row], reader.line_num
                continue
            if len(row) != len(header):
                raise DataFormatError(f"{source}:{reader.line_num}: {len(row)} fields, but the header "
                                      f"(line {rows.header_line}) names {len(header)}")
            rows.rows.append((reader.line_num, dict(zip(header, row))))
    except csv.Error as err:
        raise DataFormatError(f"{source}:{reader.line_num}: {err}") from None
    if header is None:
        raise DataFormatError(f"{source}: empty file, expected a header row naming the columns")
    return rows
