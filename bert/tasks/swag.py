"""SWAG: the swagaf CSV files (train.csv, val.csv, test.csv) and 4-choice features.

# ,video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label
# 0,anetv_x,18419,He rides the bike. He,He rides the bike.,He,gold,stops.,falls.,waves.,sings.,0

The first, unnamed column is a row number; test.csv has no label column. Each choice is
``[CLS] sent1 [SEP] sent2 + ending_i [SEP]`` with longest-first truncation, as run_swag.py.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from bert.tasks.glue import build_pair_input
from bert.tasks.records import (
    DataFormatError,
    InputFeatures,
    MultipleChoiceFeatures,
    SwagExample,
    Tokenizer,
    read_utf8,
)

logger = logging.getLogger(__name__)

NUM_CHOICES = 4
REQUIRED_COLUMNS = ("fold-ind", "sent1", "sent2", "ending0", "ending1", "ending2", "ending3")
FILES = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}


def read_swag_examples(path: str | os.PathLike, is_training: bool) -> list[SwagExample]:
    """Read a swagaf CSV file; columns are found by their header names.

    Args:
        path: train.csv, val.csv or test.csv.
        is_training: require the label column (val.csv has one too; test.csv has none).
    Returns:
        the examples in file order (label None where the file has no label column).
    """
    text = read_utf8(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    examples = []
    try:
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{path}: empty file, expected the swagaf header line")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if is_training and "label" not in header:
            missing.append("label")
        if missing:
            raise DataFormatError(f"{path}:1: header lacks the column(s) {', '.join(missing)}")
        col = {name: header.index(name) for name in (*REQUIRED_COLUMNS, "label") if name in header}
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFormatError(
                    f"{path}:{reader.line_num}: expected {len(header)} comma-separated fields (as in the "
                    f"header: 4 endings), found {len(row)}"
                )
            label = None
            if "label" in col:
                value = row[col["label"]]
                if value not in ("0", "1", "2", "3"):
                    raise DataFormatError(f"{path}:{reader.line_num}: label {value!r} is not one of 0, 1, 2, 3")
                label = int(value)
            examples.append(
                SwagExample(
                    swag_id=row[col["fold-ind"]],
                    context_sentence=row[col["sent1"]],
                    start_ending=row[col["sent2"]],
                    endings=tuple(row[col[f"ending{i}"]] for i in range(NUM_CHOICES)),
                    label=label,
                )
            )
    except csv.Error as e:
        raise DataFormatError(f"{path}:{reader.line_num}: {e}") from None
    logger.info("read %d SWAG examples from %s", len(examples), path)
    return examples


def convert_examples_to_features(
    examples: Sequence[SwagExample], tokenizer: Tokenizer, max_seq_length: int, progress: bool = False
) -> list[MultipleChoiceFeatures]:
    """Four model inputs per example: the context paired with each full ending.

    # [CLS] he rides the bike . [SEP] he stops . [SEP]
    # type:  0  0   0    0   0  0   0    1   1   1   1

    Args:
        examples: from read_swag_examples.
        tokenizer: a BertTokenizer (or a CachedTokenizer around one).
        max_seq_length: the most tokens per choice, [CLS] and [SEP]s included.
        progress: show a tqdm bar.
    Returns:
        one MultipleChoiceFeatures per example, its `choices` in ending order.
    """
    if max_seq_length < 4:
        raise ValueError(f"max_seq_length must be at least 4, got {max_seq_length}")
    features = []
    num_truncated = 0
    for example in tqdm(examples, desc="swag features", disable=not progress):
        context_tokens = tokenizer.tokenize(example.context_sentence)
        start_ending_tokens = tokenizer.tokenize(example.start_ending)
        choices = []
        for ending in example.endings:
            ending_tokens = [*start_ending_tokens, *tokenizer.tokenize(ending)]
            tokens, segment_ids, truncated = build_pair_input(context_tokens, ending_tokens, max_seq_length)
            num_truncated += truncated
            choices.append(InputFeatures(tokenizer.convert_tokens_to_ids(tokens), segment_ids, None, truncated))
        features.append(MultipleChoiceFeatures(example.swag_id, choices, example.label))
    if num_truncated:
        logger.info("truncated %d of %d SWAG choices to %d tokens", num_truncated, 4 * len(features), max_seq_length)
    return features


@dataclass(frozen=True)
class SwagProcessor:
    """Finds and reads the swagaf files in a data folder (train.csv, val.csv, test.csv)."""

    name: str = "swag"
    files: dict = field(default_factory=lambda: dict(FILES))

    def path(self, data_dir: str | os.PathLike, split: str) -> Path:
        """The file holding `split` ("train", "dev" or "test") inside `data_dir`."""
        if split not in self.files:
            raise ValueError(f"swag has no {split!r} split (it has: {', '.join(self.files)})")
        return Path(data_dir) / self.files[split]

    def get_examples(self, data_dir: str | os.PathLike, split: str) -> list[SwagExample]:
        """Read `split`; train and dev need labels, test has none."""
        return read_swag_examples(self.path(data_dir, split), is_training=split != "test")


SWAG = SwagProcessor()
