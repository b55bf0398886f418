"""The inputs of ``bert predict``: rows of a TSV, CSV, JSONL (or JSON) file, SQuAD's JSON, or plain lines,
as typed records of the task's kind, checked row by row.

    TSV / CSV   a header row naming the columns; TSV takes quotes as text (as GLUE's files), CSV as quoting
    JSONL       one object per line (a .json file: a list of objects, or SQuAD's {"data": [...]})
    lines       one input per line (stdin, "-", or any other file): "text", "text_a ||| text_b",
                "question ||| context", "context ||| choice 1 ||| choice 2 ..."

Columns are found by their usual names (below) or named with the flags; ``id`` is optional (the line
number stands in). A bad row is a ValueError naming the file, the line and the column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from bert.tasks.records import DataFormatError
from bert.tasks.tables import Rows as _Rows, read_jsonl as _read_jsonl, read_table as _read_table

FORMATS = ("tsv", "csv", "jsonl", "json", "lines")
ID_NAMES = ("id", "idx", "index", "guid", "qid")
# (text_a, text_b) column names, tried in order: a pair when both are there (GLUE's, HF datasets', MRPC's files).
PAIR_NAMES = (("text_a", "text_b"), ("text", "text_pair"), ("sentence1", "sentence2"), ("question1", "question2"),
              ("question", "sentence"), ("premise", "hypothesis"), ("#1 String", "#2 String"))
TEXT_NAMES = ("text", "text_a", "sentence", "sentence1", "question", "question1", "premise", "#1 String")
QUESTION_NAMES = ("question", "query")
CONTEXT_NAMES = ("context", "passage", "paragraph")
CHOICE_CONTEXT_NAMES = ("context", "startphrase", "sent1", "question")
CHOICE_PREFIX_NAMES = ("sent2", "start_ending")  # SWAG's: put before every ending (with sent1 as the context)
CHOICES_NAMES = ("choices", "endings", "options")
ENDING = re.compile(r"^ending(\d+)$")
SEPARATOR = re.compile(r"\s*\|\|\|\s*")


@dataclass(frozen=True)
class TextInput:
    """A text or a pair, for classification, regression and multi-label."""

    id: str
    text_a: str
    text_b: Optional[str] = None

    def echo(self) -> dict[str, Any]:
        """The input's fields as the output repeats them."""
        if self.text_b is None:
            return {"id": self.id, "text": self.text_a}
        return {"id": self.id, "text_a": self.text_a, "text_b": self.text_b}


@dataclass(frozen=True)
class QuestionInput:
    """A question on a context, for extractive QA."""

    id: str
    question: str
    context: str

    def echo(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "context": self.context}


@dataclass(frozen=True)
class ChoiceInput:
    """A context and its choices, for multiple choice; `prefix` (SWAG's sent2) starts every choice."""

    id: str
    context: str
    choices: tuple[str, ...]
    prefix: str = ""

    def echo(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "context": self.context}
        if self.prefix:
            out["prefix"] = self.prefix
        out["choices"] = list(self.choices)
        return out


Input = Union[TextInput, QuestionInput, ChoiceInput]


@dataclass(frozen=True)
class Columns:
    """Column names given on the command line (None: found by their usual names)."""

    id: Optional[str] = None
    text: Optional[str] = None
    text_pair: Optional[str] = None
    question: Optional[str] = None
    context: Optional[str] = None
    choices: Optional[str] = None


def detect_format(path: str) -> str:
    """The format a path's name implies: "-" (stdin) and unknown suffixes are lines."""
    suffix = Path(path).suffix.lower()
    return {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}.get(
        suffix, "lines") if path != "-" else "lines"


def read_inputs(path: str, text: str, task: str, fmt: Optional[str] = None, columns: Columns = Columns(),
                num_choices: Optional[int] = None) -> list[Input]:
    """Parse and check every input of a file's text.

    Args:
        path: the file's name as the messages show it ("-" for stdin).
        text: its content.
        task: "text" (classification, regression, multi-label), "qa" or "choice".
        fmt: one of FORMATS (default: from the name, see detect_format).
        columns: names given with the flags.
        num_choices: the number of choices every multiple-choice input must have (None: as the first one).
    Returns:
        The inputs in file order.
    Raises:
        ValueError: naming the file, the line and the column (a missing column, an empty text, invalid JSON,
            a wrong number of choices, a row with the wrong number of fields).
    """
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = "<stdin>" if path == "-" else path
    if fmt == "json":
        raw = _read_json(source, text)
        if isinstance(raw, list):
            return _from_table(_Rows(source, "table", raw), task, columns, num_choices)
        if task != "qa":
            raise ValueError(f"{source}: a SQuAD file ({{\"data\": ...}}) holds questions; this model is not for QA")
        return _from_squad(source, raw)
    if fmt == "lines":
        rows = _Rows(source, "lines", [(n, SEPARATOR.split(line.strip()))
                                       for n, line in enumerate(text.splitlines(), 1)])
        if not rows.rows:
            raise ValueError(f"{source}: no inputs (expected one per line)")
        return _from_lines(rows, task, num_choices)
    rows = _read_jsonl(source, text) if fmt == "jsonl" else _read_table(source, text, fmt)
    if not rows.rows:
        raise ValueError(f"{source}: no inputs")
    return _from_table(rows, task, columns, num_choices)


def _read_json(source: str, text: str) -> Any:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{source}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise DataFormatError(f"{source}: item {i} of the list is {type(item).__name__}, expected an object")
        return [(i + 1, item) for i, item in enumerate(raw)]
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DataFormatError(f"{source}: expected a list of objects or SQuAD's {{\"data\": [...]}}")
    return raw


def _pick(keys: Sequence[str], given: Optional[str], names: Sequence[str]) -> Optional[str]:
    if given is not None:
        return given
    return next((name for name in names if name in keys), None)


def _missing(rows: _Rows, what: str, names: Sequence[str], flag: str) -> DataFormatError:
    where = f"{rows.source}:{rows.header_line}" if rows.rows else rows.source
    return DataFormatError(f"{where}: no column for the {what}; expected one of {', '.join(map(repr, names))} "
                           f"(or name it with {flag})")


def _text(rows: _Rows, line: int, fields: dict, column: str, required: bool = True) -> str:
    if column not in fields or fields[column] is None:
        raise DataFormatError(f"{rows.source}:{line}: no column {column!r} in this row")
    value = fields[column]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFormatError(f"{rows.source}:{line}: column {column!r} holds {type(value).__name__}, expected text")
    value = str(value)
    if required and not value.strip():
        raise DataFormatError(f"{rows.source}:{line}: column {column!r} is empty; a text is required")
    return value


def _row_id(rows: _Rows, line: int, fields: dict, column: Optional[str]) -> str:
    if column is None:
        return str(line)
    return _text(rows, line, fields, column)


def _from_table(rows: _Rows, task: str, columns: Columns, num_choices: Optional[int]) -> list[Input]:
    keys = list(rows.rows[0][1])  # the header (or the first object's keys) decides the layout
    id_column = _pick(keys, columns.id, ID_NAMES)
    if task == "qa":
        question = _pick(keys, columns.question, QUESTION_NAMES)
        context = _pick(keys, columns.context, CONTEXT_NAMES)
        if question is None:
            raise _missing(rows, "question", QUESTION_NAMES, "--question-column")
        if context is None:
            raise _missing(rows, "context", CONTEXT_NAMES, "--context-column")
        return [QuestionInput(_row_id(rows, n, f, id_column), _text(rows, n, f, question), _text(rows, n, f, context))
                for n, f in rows.rows]
    if task == "choice":
        return _choices_from_table(rows, keys, id_column, columns, num_choices)
    text_a, text_b = columns.text, columns.text_pair
    if text_a is None and text_b is None:
        text_a, text_b = next(((a, b) for a, b in PAIR_NAMES if a in keys and b in keys), (None, None))
    if text_a is None:
        text_a = _pick(keys, None, TEXT_NAMES)
    if text_a is None:
        raise _missing(rows, "text", TEXT_NAMES, "--text-column")
    return [TextInput(_row_id(rows, n, f, id_column), _text(rows, n, f, text_a),
                      None if text_b is None else _text(rows, n, f, text_b)) for n, f in rows.rows]


def _choices_from_table(rows: _Rows, keys: list[str], id_column: Optional[str], columns: Columns,
                        num_choices: Optional[int]) -> list[Input]:
    context = _pick(keys, columns.context, CHOICE_CONTEXT_NAMES)
    if context is None:
        raise _missing(rows, "context", CHOICE_CONTEXT_NAMES, "--context-column")
    prefix = _pick(keys, None, CHOICE_PREFIX_NAMES) if context == "sent1" else None
    choices = _pick(keys, columns.choices, CHOICES_NAMES)
    endings = sorted((int(m.group(1)), key) for key in keys if (m := ENDING.match(key)))
    if choices is None and not endings:
        raise _missing(rows, "choices", (*CHOICES_NAMES, "ending0", "ending1", "..."), "--choices-column")
    out: list[Input] = []
    expected = num_choices
    for n, f in rows.rows:
        if choices is not None:
            values = _choice_list(rows, n, f, choices)
        else:
            values = [_text(rows, n, f, key) for _, key in endings]
        named = repr(choices) if choices is not None else "ending0.."
        if expected is not None and len(values) != expected:
            because = "the model folder's num_choices" if num_choices is not None else f"line {rows.rows[0][0]}'s"
            raise DataFormatError(f"{rows.source}:{n}: column {named} has {len(values)} choices, expected "
                                  f"{expected} (as {because})")
        expected = len(values)
        out.append(ChoiceInput(_row_id(rows, n, f, id_column), _text(rows, n, f, context), tuple(values),
                               _text(rows, n, f, prefix, required=False) if prefix else ""))
    return out


def _choice_list(rows: _Rows, line: int, fields: dict, column: str) -> list[str]:
    if column not in fields:
        raise DataFormatError(f"{rows.source}:{line}: no column {column!r} in this row")
    value = fields[column]
    if isinstance(value, str):  # a TSV/CSV cell: a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{rows.source}:{line}: column {column!r} is not a JSON list of choices "
                                  f"({err.msg})") from None
    if not isinstance(value, list) or len(value) < 2:
        raise DataFormatError(f"{rows.source}:{line}: column {column!r} must be a list of at least 2 choices")
    out = []
    for i, choice in enumerate(value):
        if not isinstance(choice, str) or not choice.strip():
            raise DataFormatError(f"{rows.source}:{line}: column {column!r}: choice {i} is empty or not text")
        out.append(choice)
    return out


def _from_lines(rows: _Rows, task: str, num_choices: Optional[int]) -> list[Input]:
    out: list[Input] = []
    expected = num_choices
    for n, parts in rows.rows:
        if not any(part for part in parts):
            raise DataFormatError(f"{rows.source}:{n}: empty line; a text is required")
        empty = [i for i, part in enumerate(parts) if not part]
        if task == "qa":
            if len(parts) != 2 or empty:
                raise DataFormatError(f"{rows.source}:{n}: expected 'question ||| context', two non-empty texts")
            out.append(QuestionInput(str(n), parts[0], parts[1]))
        elif task == "choice":
            if len(parts) < 3 or empty:
                raise DataFormatError(f"{rows.source}:{n}: expected 'context ||| choice ||| choice ...', "
                                      "non-empty texts")
            if expected is not None and len(parts) - 1 != expected:
                raise DataFormatError(f"{rows.source}:{n}: {len(parts) - 1} choices, expected {expected}")
            expected = len(parts) - 1
            out.append(ChoiceInput(str(n), parts[0], tuple(parts[1:])))
        else:
            if len(parts) > 2 or empty:
                raise DataFormatError(f"{rows.source}:{n}: expected 'text' or 'text_a ||| text_b', non-empty")
            out.append(TextInput(str(n), parts[0], parts[1] if len(parts) == 2 else None))
    return out


def _from_squad(source: str, raw: dict) -> list[Input]:
    """Every question of SQuAD's {"data": [{"paragraphs": [{"context", "qas": [{"id", "question"}]}]}]}."""
    out: list[Input] = []
    for a, article in enumerate(raw["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else [None]):
            where = f"{source}: article {a} paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise DataFormatError(f"{where}: expected an object with a context text")
            context = paragraph["context"]
            if not context.strip():
                raise DataFormatError(f"{where}: the context is empty; a text is required")
            for q, qa in enumerate(paragraph.get("qas", [])):
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(question, str) or not question.strip():
                    raise DataFormatError(f"{where} question {q}: no question text")
                out.append(QuestionInput(str(qa.get("id", f"{a}-{p}-{q}")), question, context))
    if not out:
        raise DataFormatError(f"{source}: no questions")
    return out

