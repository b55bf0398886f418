"""GLUE: readers for the nine tasks and the AX diagnostic, features, and submission files.

The files are the ones ``download_glue_data.py`` writes. Their quirks, handled here:
  - tab-separated, and quotes are text (``"100 percent"``): read with ``quoting=QUOTE_NONE``;
  - MRPC train/dev start with a UTF-8 byte-order mark: decoded as ``utf-8-sig``;
  - CoLA train/dev have no header line (its test file does);
  - test files have no label column; MNLI's label is the last of a variable number of columns.
Every row must have as many fields as the header (CoLA: 4); a short row, a label outside the
task's set or an unparsable score is a DataFormatError naming the file and line.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from bert.io.fileio import atomic_write_text
from bert.tasks.records import DataFormatError, InputExample, InputFeatures, Tokenizer, read_utf8
from bert.text.truncation import truncate_seq_pair

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Columns:
    """Where a file keeps its fields. Column numbers may be negative (MNLI's label is the last)."""

    text_a: int
    text_b: Optional[int] = None
    label: Optional[int] = None
    index: Optional[int] = None  # the id column a GLUE submission echoes back
    num_fields: Optional[int] = None  # files without a header line: their exact field count


@dataclass(frozen=True)
class GlueProcessor:
    """Reads one GLUE task's TSV files into InputExamples.

    Attributes:
        name: the task registry's name ("mrpc").
        labels: the label strings in label-id order, or None for regression (STS-B).
        files: split -> file name inside the task's data folder (missing split: not provided).
        labeled / unlabeled: column layouts of the train/dev files and of the test file.
        submission_name: the file name the GLUE server expects ("MRPC.tsv").
    """

    name: str
    labels: Optional[tuple[str, ...]]
    files: dict
    labeled: Columns
    unlabeled: Columns
    submission_name: str

    def path(self, data_dir: str | os.PathLike, split: str) -> Path:
        """The file holding `split` ("train", "dev" or "test") inside `data_dir`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self.files:
            have = ", ".join(self.files)
            raise ValueError(f"GLUE task {self.name} has no {split} split (it has: {have})")
        return Path(data_dir) / self.files[split]

    def get_examples(self, data_dir: str | os.PathLike, split: str) -> list[InputExample]:
        """Read `split` from the task's data folder.

        Args:
            data_dir: the folder with the task's TSV files (e.g. glue_data/MRPC).
            split: "train", "dev" or "test".
        Returns:
            the examples in file order (test examples carry label None).
        """
        return self.read(self.path(data_dir, split), split)

    def read(self, path: str | os.PathLike, split: str) -> list[InputExample]:
        """Read a TSV file laid out as this task's `split` (labels on train/dev, none on test).

        Args:
            path: the TSV file.
            split: "train", "dev" or "test" (decides the column layout and the guid prefix).
        Returns:
            the examples in file order.
        """
        cols = self.unlabeled if split == "test" else self.labeled
        examples = []
        for line_no, row_no, row in _read_tsv(path, cols):
            index = row[cols.index] if cols.index is not None else str(row_no)
            label = None
            if cols.label is not None:
                label = row[cols.label]
                self._check_label(label, path, line_no)
            examples.append(
                InputExample(
                    guid=f"{split}-{index}",
                    text_a=row[cols.text_a],
                    text_b=row[cols.text_b] if cols.text_b is not None else None,
                    label=label,
                )
            )
        logger.info("read %d %s examples of %s from %s", len(examples), split, self.name, path)
        return examples

    def _check_label(self, label: str, path, line_no: int) -> None:
        if self.labels is None:
            try:
                score = float(label)
            except ValueError:
                raise DataFormatError(f"{path}:{line_no}: score {label!r} is not a number") from None
            if not math.isfinite(score):  # nan, inf, or 1e400 (inf once read): a NaN loss, a NaN model
                raise DataFormatError(f"{path}:{line_no}: score {label!r} is not a finite number")
        elif label not in self.labels:
            raise DataFormatError(
                f"{path}:{line_no}: label {label!r} is not one of the {self.name} labels {list(self.labels)}"
            )


def _read_tsv(path: str | os.PathLike, cols: Columns):
    """Yield (line number, data-row number, fields) for each data row of a GLUE TSV file."""
    text = read_utf8(path)
    if not text.strip():
        raise DataFormatError(f"{path}: empty file, expected GLUE rows")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    expected = cols.num_fields
    if expected is not None:
        _check_layout(path, cols, expected)
    row_no = 0
    try:
        for row in reader:
            if not row:
                continue  # a blank line (e.g. after the last row)
            if expected is None:  # the header line
                expected = len(row)
                _check_layout(path, cols, expected)
                continue
            if len(row) != expected:
                source = "as in the header" if cols.num_fields is None else "for this task"
                raise DataFormatError(
                    f"{path}:{reader.line_num}: expected {expected} tab-separated fields ({source}), "
                    f"found {len(row)}"
                )
            yield reader.line_num, row_no, row
            row_no += 1
    except csv.Error as e:
        raise DataFormatError(f"{path}:{reader.line_num}: {e}") from None


def _check_layout(path, cols: Columns, num_fields: int) -> None:
    used = [c for c in (cols.text_a, cols.text_b, cols.label, cols.index) if c is not None]
    needed = max(c + 1 if c >= 0 else -c for c in used)
    if num_fields < needed:
        raise DataFormatError(f"{path}:1: rows have {num_fields} fields, but this task's layout needs at least {needed}")


def build_pair_input(tokens_a: list[str], tokens_b: Optional[list[str]], max_seq_length: int):
    """Truncate and frame one or two token lists as BERT input.

    # pair:   [CLS] is this jack ##son ##ville ? [SEP] no it is not . [SEP]
    # type:     0   0  0    0    0     0      0   0    1  1  1  1  1   1
    # single: [CLS] the dog is hairy . [SEP]
    # type:     0   0   0   0  0     0   0

    Args:
        tokens_a, tokens_b: token lists (not modified); tokens_b None for a single sentence.
        max_seq_length: the most tokens the result may hold.
    Returns:
        (tokens, segment_ids, truncated).
    """
    tokens_a = list(tokens_a)
    if tokens_b is None:
        truncated = len(tokens_a) > max_seq_length - 2
        del tokens_a[max_seq_length - 2 :]
        return ["[CLS]", *tokens_a, "[SEP]"], [0] * (len(tokens_a) + 2), truncated
    tokens_b = list(tokens_b)
    total = len(tokens_a) + len(tokens_b)
    truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)  # longest first, B on ties
    truncated = len(tokens_a) + len(tokens_b) < total
    tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return tokens, segment_ids, truncated


def convert_examples_to_features(
    examples: Sequence[InputExample],
    label_list: Optional[Sequence[str]],
    max_seq_length: int,
    tokenizer: Tokenizer,
    progress: bool = False,
) -> list[InputFeatures]:
    """Tokenize GLUE examples into unpadded model inputs (longest-first pair truncation).

    Args:
        examples: from a GlueProcessor.
        label_list: the task's labels in id order, or None for regression (label -> float); a multi-label
            example's label (a tuple of names) becomes a multi-hot list of floats.
        max_seq_length: the most tokens per input, [CLS] and [SEP]s included.
        tokenizer: a BertTokenizer (or a CachedTokenizer around one).
        progress: show a tqdm bar.
    Returns:
        one InputFeatures per example, in order.
    """
    if max_seq_length < 4:
        raise ValueError(f"max_seq_length must be at least 4 ([CLS] a [SEP] b [SEP] needs room), got {max_seq_length}")
    label_map = {label: i for i, label in enumerate(label_list)} if label_list is not None else None
    features = []
    num_truncated = 0
    for example in tqdm(examples, desc="glue features", disable=not progress):
        tokens_b = tokenizer.tokenize(example.text_b) if example.text_b is not None else None
        tokens, segment_ids, truncated = build_pair_input(tokenizer.tokenize(example.text_a), tokens_b, max_seq_length)
        num_truncated += truncated
        if example.label is None:
            label_id = None
        elif isinstance(example.label, tuple):  # multi-label: the names a row has, as a multi-hot row of floats
            unknown = [name for name in example.label if name not in (label_map or {})]
            if unknown:
                raise ValueError(f"example {example.guid}: labels {unknown} are not among {list(label_map or {})}")
            label_id = [1.0 if name in example.label else 0.0 for name in label_map]
        elif label_map is None:
            label_id = float(example.label)
        elif example.label in label_map:
            label_id = label_map[example.label]
        else:
            raise ValueError(f"example {example.guid}: label {example.label!r} is not one of {list(label_map)}")
        features.append(InputFeatures(tokenizer.convert_tokens_to_ids(tokens), segment_ids, label_id, truncated))
    if num_truncated:
        logger.info("truncated %d of %d examples to %d tokens", num_truncated, len(features), max_seq_length)
    return features


def write_submission(
    processor: GlueProcessor,
    examples: Sequence[InputExample],
    predictions: Sequence,
    output_dir: str | os.PathLike,
) -> Path:
    """Write a GLUE test-set submission file (``index<TAB>prediction``) atomically.

    The server's conventions, as the GLUE baselines write them (nyu-mll/GLUE-baselines: src/main.py at a634833
    writes the files, src/evaluate.py at bfbe769 clips STS-B): a header ``index<TAB>prediction``, one row per
    test example with the test file's own index; labels as the task's strings (MNLI, AX:
    entailment/neutral/contradiction; QNLI, RTE: entailment/not_entailment; CoLA, SST-2, MRPC, QQP, WNLI: 0/1);
    STS-B a score clipped to [0, 5], 3 decimals.

    Args:
        processor: the task (decides the file name and how label ids print).
        examples: the test examples, in the order of `predictions`.
        predictions: label ids (classification) or scores (regression).
        output_dir: the submission folder.
    Returns:
        the written file's path.
    """
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    lines = ["index\tprediction"]
    for example, pred in zip(examples, predictions):
        if processor.labels is None:
            score = float(pred)
            if not math.isfinite(score):
                raise ValueError(f"example {example.guid}: score {score} is not a finite number")
            value = f"{min(max(score, 0.0), 5.0):.3f}"  # STS-B's scale is 0-5
        else:
            pred = int(pred)
            if not 0 <= pred < len(processor.labels):
                raise ValueError(f"example {example.guid}: label id {pred} out of range for {processor.name}")
            value = processor.labels[pred]
        lines.append(f"{example.index}\t{value}")
    path = Path(output_dir) / processor.submission_name
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# The train/dev and test layouts of each task, as download_glue_data.py writes them.
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_MNLI = ("contradiction", "entailment", "neutral")
_STD = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
# index, sentence1, sentence2, label  (QNLI: index, question, sentence, label)
_IDX_PAIR = Columns(text_a=1, text_b=2, label=-1, index=0)
_IDX_PAIR_TEST = Columns(text_a=1, text_b=2, index=0)
_MNLI_COLS = Columns(text_a=8, text_b=9, label=-1, index=0)
_MNLI_TEST = Columns(text_a=8, text_b=9, index=0)

COLA = GlueProcessor(
    "cola", _BINARY, _STD,
    # source, label, original label (blank), sentence: no header line
    labeled=Columns(text_a=3, label=1, num_fields=4),
    unlabeled=Columns(text_a=1, index=0),
    submission_name="CoLA.tsv",
)
SST2 = GlueProcessor(
    "sst2", _BINARY, _STD,
    labeled=Columns(text_a=0, label=1), unlabeled=Columns(text_a=1, index=0), submission_name="SST-2.tsv",
)
MRPC = GlueProcessor(
    "mrpc", _BINARY, _STD,
    # Quality, #1 ID, #2 ID, #1 String, #2 String   (test: index, #1 ID, #2 ID, ...)
    labeled=Columns(text_a=3, text_b=4, label=0), unlabeled=Columns(text_a=3, text_b=4, index=0),
    submission_name="MRPC.tsv",
)
STSB = GlueProcessor(
    "stsb", None, _STD,
    # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score
    labeled=Columns(text_a=7, text_b=8, label=9, index=0), unlabeled=Columns(text_a=7, text_b=8, index=0),
    submission_name="STS-B.tsv",
)
QQP = GlueProcessor(
    "qqp", _BINARY, _STD,
    # id, qid1, qid2, question1, question2, is_duplicate   (test: id, question1, question2)
    labeled=Columns(text_a=3, text_b=4, label=5, index=0), unlabeled=_IDX_PAIR_TEST, submission_name="QQP.tsv",
)
MNLI = GlueProcessor(
    "mnli", _MNLI, {"train": "train.tsv", "dev": "dev_matched.tsv", "test": "test_matched.tsv"},
    labeled=_MNLI_COLS, unlabeled=_MNLI_TEST, submission_name="MNLI-m.tsv",
)
MNLI_MM = GlueProcessor(
    "mnli-mm", _MNLI, {"train": "train.tsv", "dev": "dev_mismatched.tsv", "test": "test_mismatched.tsv"},
    labeled=_MNLI_COLS, unlabeled=_MNLI_TEST, submission_name="MNLI-mm.tsv",
)
QNLI = GlueProcessor("qnli", _NLI2, _STD, _IDX_PAIR, _IDX_PAIR_TEST, "QNLI.tsv")
RTE = GlueProcessor("rte", _NLI2, _STD, _IDX_PAIR, _IDX_PAIR_TEST, "RTE.tsv")
WNLI = GlueProcessor("wnli", _BINARY, _STD, _IDX_PAIR, _IDX_PAIR_TEST, "WNLI.tsv")
# The diagnostic set: a test file only, predicted with an MNLI model and scored by Matthews corr.
AX = GlueProcessor("ax", _MNLI, {"test": "diagnostic.tsv"}, _IDX_PAIR, _IDX_PAIR_TEST, "AX.tsv")

PROCESSORS = (COLA, SST2, MRPC, STSB, QQP, MNLI, MNLI_MM, QNLI, RTE, WNLI, AX)
