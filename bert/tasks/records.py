"""Record types shared by the task readers, feature converters and post-processing.

Features are *unpadded*: ``len(input_ids)`` is the example's true length and the attention mask
is all ones over it. Batching code pads (dynamic padding), so nothing here knows a batch shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, Sequence, Union

Label = Union[int, float]


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file and line or id."""


def read_utf8(path: str | os.PathLike) -> str:
    """A text file's content (a leading byte-order mark dropped); bad bytes name the line.

    Args:
        path: the file.
    Returns:
        its text; a DataFormatError when it is not UTF-8.
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFormatError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None


class Tokenizer(Protocol):
    """What the feature converters need from a tokenizer (``bert.tokenization.BertTokenizer``)."""

    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class InputExample:
    """One GLUE example: a single sentence (``text_b`` None) or a sentence pair.

    ``guid`` is ``"<split>-<index>"``: index is the file's own index column where it has one (the
    id a GLUE submission needs), else the 0-based data row. ``label`` is None on test sets.
    """

    guid: str
    text_a: str
    text_b: Optional[str] = None
    label: Optional[str] = None

    @property
    def index(self) -> str:
        """The example's index within its file (the part of ``guid`` after the split name)."""
        return self.guid.split("-", 1)[1]


@dataclass
class InputFeatures:
    """A GLUE/SWAG model input: ``[CLS] a [SEP] (b [SEP])`` as ids, unpadded.

    ``label_id`` is the class index, the float score (regression), or None when unlabelled.
    ``truncated`` says whether longest-first truncation dropped tokens.
    """

    input_ids: list[int]
    segment_ids: list[int]
    label_id: Optional[Label]
    truncated: bool = False


@dataclass(frozen=True)
class SquadExample:
    """One SQuAD question on a whitespace-split paragraph.

    ``start_position``/``end_position`` index ``doc_tokens`` (whitespace words) and come from the
    first gold answer; they are -1 for an impossible question and None when there is no answer to
    locate. ``answers`` holds every gold answer text (the evaluation uses the JSON file itself).
    """

    qas_id: str
    question_text: str
    doc_tokens: list[str]
    orig_answer_text: Optional[str] = None
    start_position: Optional[int] = None
    end_position: Optional[int] = None
    is_impossible: bool = False
    answers: tuple[str, ...] = ()


@dataclass
class SquadFeatures:
    """One sliding window of a SQuAD example: ``[CLS] query [SEP] doc-window [SEP]``, unpadded.

    Unlike the original's dicts, ``token_to_orig_map`` and ``token_is_max_context`` are lists aligned
    with ``tokens``: the whitespace-word index of each context token (-1 outside the context) and
    whether this window gives the token its most context. ``start_position``/``end_position`` are
    token positions of the answer for training (0, the [CLS], when the window does not hold it or the
    question is impossible) and None when features were made for prediction.
    """

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list[str]
    token_to_orig_map: list[int]
    token_is_max_context: list[bool]
    input_ids: list[int]
    segment_ids: list[int]
    start_position: Optional[int] = None
    end_position: Optional[int] = None
    is_impossible: bool = False


@dataclass(frozen=True)
class SquadResult:
    """The model's output for one SquadFeatures: start and end logits over its positions."""

    unique_id: int
    start_logits: Sequence[float]
    end_logits: Sequence[float]


@dataclass(frozen=True)
class SwagExample:
    """One SWAG question: a context, the shared start of the ending, and four endings."""

    swag_id: str
    context_sentence: str
    start_ending: str
    endings: tuple[str, str, str, str]
    label: Optional[int] = None


@dataclass
class MultipleChoiceFeatures:
    """A multiple-choice input: one InputFeatures-like sequence per choice, plus the gold choice."""

    example_id: str
    choices: list[InputFeatures] = field(default_factory=list)
    label: Optional[int] = None


class CachedTokenizer:
    """Wraps a tokenizer and memoises ``tokenize`` by its input string.

    Tokenization is a pure function of the text, so a cache is exact. The SQuAD converter tokenizes
    each whitespace word of a context on its own (as the original), so one cache shared across
    max_seq_length/doc_stride settings tokenizes every distinct word once.

    Args:
        tokenizer: anything with ``tokenize`` and ``convert_tokens_to_ids``.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._tokens: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        """The wrapped tokenizer's tokens for `text` (a shared list: do not modify it)."""
        tokens = self._tokens.get(text)
        if tokens is None:
            tokens = self._tokens[text] = self.tokenizer.tokenize(text)
        return tokens

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """The wrapped tokenizer's ids."""
        return self.tokenizer.convert_tokens_to_ids(tokens)

    def __len__(self) -> int:
        return len(self._tokens)
