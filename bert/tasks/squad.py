"""SQuAD v1.1 / v2.0: examples from the JSON files, and sliding-window features.

As google-research/bert's run_squad.py: contexts are split into whitespace words with a
character -> word map; each word is WordPiece-tokenized on its own; long contexts become windows of
``max_seq_length`` tokens advanced by ``doc_stride``; each context token is flagged in the window
where it has the most context; training answers are tightened to the tokens that spell the answer.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from bert.io.jsonfile import read_json
from bert.tasks.records import DataFormatError, SquadExample, SquadFeatures, Tokenizer

logger = logging.getLogger(__name__)

FIRST_UNIQUE_ID = 1000000000  # as the original, so ids never collide with example indexes


def _is_whitespace(c: str) -> bool:
    # the original's set: space, tab, CR, LF and NARROW NO-BREAK SPACE (U+202F)
    return c == " " or c == "\t" or c == "\r" or c == "\n" or ord(c) == 0x202F


def split_context(text: str) -> tuple[list[str], list[int]]:
    """Split a paragraph into whitespace words.

    Args:
        text: the context.
    Returns:
        (words, char_to_word): char_to_word[i] is the index of the word holding character i
        (whitespace maps to the word before it, -1 before the first word).
    """
    words: list[str] = []
    char_to_word: list[int] = []
    prev_is_whitespace = True
    for c in text:
        if _is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                words.append(c)
            else:
                words[-1] += c
            prev_is_whitespace = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def load_squad_json(path: str | os.PathLike) -> list:
    """The ``data`` list of a SQuAD JSON file (articles with paragraphs and questions).

    Args:
        path: the JSON file.
    Returns:
        the parsed ``data`` list; a DataFormatError for broken JSON or a missing ``data`` list.
    """
    dataset = read_json(path, error=DataFormatError)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise DataFormatError(f"{path}: expected a JSON object with a 'data' list of articles")
    return dataset["data"]


def _get(record, key: str, kind, path, where: str):
    """record[key], checked to be a `kind` (a type or a tuple of types; bool is not an int here)."""
    if not isinstance(record, dict) or key not in record:
        raise DataFormatError(f"{path}: {where}: missing key {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise DataFormatError(f"{path}: {where}: {key!r} should be {expected}, got {type(value).__name__}")
    return value


def read_squad_examples(
    path: str | os.PathLike, is_training: bool, version_2_with_negative: bool = False
) -> list[SquadExample]:
    """Read a SQuAD JSON file into SquadExamples.

    Every answer must be non-empty and lie inside its context (a DataFormatError names the question
    id otherwise); answers whose text is not at their answer_start are counted and logged. Positions
    come from the first answer. In training, as the original, a question whose answer text cannot be
    found in the words its offset points at is skipped, counted and logged (the original required
    exactly one answer per training question; the official train files have one).

    Args:
        path: SQuAD JSON (train-v1.1.json, dev-v2.0.json, ...).
        is_training: skip unrecoverable answers; require an answer unless impossible.
        version_2_with_negative: read ``is_impossible`` (SQuAD 2.0).
    Returns:
        the examples in file order.
    """
    data = load_squad_json(path)
    examples: list[SquadExample] = []
    skipped: list[str] = []
    misplaced: list[str] = []  # questions with an answer text not found at its answer_start
    seen_ids: set[str] = set()  # predictions.json is keyed by id: a repeated id would lose an answer
    for a, article in enumerate(data):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, path, f"article {a}")):
            where = f"article {a} paragraph {p}"
            context = _get(paragraph, "context", str, path, where)
            doc_tokens, char_to_word = split_context(context)
            for q, qa in enumerate(_get(paragraph, "qas", list, path, where)):
                qas_id = str(_get(qa, "id", (str, int), path, f"{where} question {q}"))
                where_q = f"question {qas_id}"
                if qas_id in seen_ids:
                    raise DataFormatError(f"{path}: {where}: question id {qas_id!r} is used twice (ids must be unique)")
                seen_ids.add(qas_id)
                question = _get(qa, "question", str, path, where_q)
                answers = _get(qa, "answers", list, path, where_q)
                is_impossible = False
                if version_2_with_negative and "is_impossible" in qa:
                    is_impossible = _get(qa, "is_impossible", bool, path, where_q)
                texts = []
                for answer in answers:
                    text = _get(answer, "text", str, path, where_q)
                    start = _get(answer, "answer_start", int, path, where_q)
                    if not text or start < 0 or start + len(text) > len(context):
                        raise DataFormatError(
                            f"{path}: {where_q}: answer {text!r} at answer_start {start} does not fit in "
                            f"its context of {len(context)} characters"
                        )
                    texts.append(text)
                    if context[start : start + len(text)] != text:
                        misplaced.append(qas_id)
                example = SquadExample(qas_id, question, doc_tokens, is_impossible=is_impossible, answers=tuple(texts))
                if is_impossible:
                    example = replace(example, orig_answer_text="", start_position=-1, end_position=-1)
                elif answers:
                    text, start = answers[0]["text"], answers[0]["answer_start"]
                    start_word = max(char_to_word[start], 0)  # (an answer on leading whitespace)
                    end_word = char_to_word[start + len(text) - 1]
                    actual = " ".join(doc_tokens[start_word : end_word + 1])
                    if is_training and actual.find(" ".join(text.split())) == -1:
                        # the original's test: the words the offsets point at must spell the answer
                        skipped.append(qas_id)
                        continue
                    example = replace(example, orig_answer_text=text, start_position=start_word, end_position=end_word)
                elif is_training:
                    hint = "" if version_2_with_negative else " (for SQuAD 2.0 set version_2_with_negative)"
                    raise DataFormatError(f"{path}: {where_q}: a training question needs an answer{hint}")
                examples.append(example)
    if misplaced:
        logger.warning("%s: %d answers are not at their answer_start: %s", path, len(misplaced), _some(misplaced))
    if skipped:
        logger.warning(
            "%s: skipped %d of %d training questions whose answer cannot be found in the words at its "
            "answer_start: %s", path, len(skipped), len(skipped) + len(examples), _some(skipped),
        )
    logger.info("read %d questions from %s", len(examples), path)
    return examples


def _some(ids: list[str], n: int = 10) -> str:
    return ", ".join(ids[:n]) + (" ..." if len(ids) > n else "")


def improve_answer_span(
    doc_tokens: Sequence[str], input_start: int, input_end: int, tokenizer: Tokenizer, orig_answer_text: str
) -> tuple[int, int]:
    """The shortest token span inside [input_start, input_end] that spells the tokenized answer.

    SQuAD answers are character spans; projected onto whitespace words then WordPieces they can be
    too wide: for "(1895-1943)." and the answer "1895", the tokens ( 1895 - 1943 ) . contain exactly
    "1895". When no sub-span matches (the answer "Japan" inside the word "Japanese") the input span
    is kept.

    Args:
        doc_tokens: the context's WordPiece tokens.
        input_start, input_end: the span of the answer's whitespace words, inclusive.
        tokenizer: tokenizes `orig_answer_text`.
        orig_answer_text: the gold answer.
    Returns:
        (start, end), inclusive token positions.
    """
    tok_answer_text = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(input_start, input_end + 1):
        for new_end in range(input_end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start : new_end + 1]) == tok_answer_text:
                return new_start, new_end
    return input_start, input_end


def doc_spans(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """Sliding windows (start, length) over `num_tokens` context tokens.

    Windows advance by doc_stride (or the window length, if smaller) until one reaches the end.
    """
    if num_tokens == 0:
        return [(0, 0)]  # an empty context still gets one window (and so a prediction)
    spans = []
    start = 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_span(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """For each context token, the index of the window where it has the most context.

    A token's score in a window is min(left context, right context) + 0.01 * window length; the
    first window with the highest score wins (run_squad's _check_is_max_context, all tokens at once).
    """
    best_score = np.full(num_tokens, -np.inf)
    best_span = np.full(num_tokens, -1, dtype=np.int64)
    for span_index, (start, length) in enumerate(spans):
        position = np.arange(start, start + length)
        score = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
        better = score > best_score[start : start + length]
        best_score[start : start + length][better] = score[better]
        best_span[start : start + length][better] = span_index
    return best_span


def _tokenize_words(words: Sequence[str], tokenizer: Tokenizer) -> tuple[list[str], list[int], list[int]]:
    """WordPiece-tokenize each whitespace word on its own.

    Returns:
        (tokens, tok_to_orig, orig_to_tok): the tokens, each token's word, each word's first token.
    """
    tokens: list[str] = []
    tok_to_orig: list[int] = []
    orig_to_tok: list[int] = []
    for i, word in enumerate(words):
        orig_to_tok.append(len(tokens))
        sub_tokens = tokenizer.tokenize(word)
        tok_to_orig.extend([i] * len(sub_tokens))
        tokens.extend(sub_tokens)
    return tokens, tok_to_orig, orig_to_tok


def _convert_long(tokenizer: Tokenizer, tokens: list[str], chunk: int = 256) -> list[int]:
    # in chunks: a whole paragraph is no model input, so no "longer than 512" warning applies
    ids: list[int] = []
    for i in range(0, len(tokens), chunk):
        ids.extend(tokenizer.convert_tokens_to_ids(tokens[i : i + chunk]))
    return ids


def check_window_settings(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """Reject settings with which windowing cannot work (they would loop forever or skip text)."""
    if max_query_length < 1:
        raise ValueError(f"max_query_length must be positive, got {max_query_length}")
    if max_seq_length < max_query_length + 4:
        raise ValueError(
            f"max_seq_length {max_seq_length} leaves no room for the context: [CLS], a question of up to "
            f"max_query_length {max_query_length} tokens, two [SEP]s and at least one context token need "
            f"{max_query_length + 4}"
        )
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be positive, got {doc_stride}")


def convert_examples_to_features(
    examples: Sequence[SquadExample],
    tokenizer: Tokenizer,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
    is_training: bool,
    progress: bool = False,
) -> list[SquadFeatures]:
    """Turn SQuAD examples into windows of at most `max_seq_length` tokens.

    # tokens:  [CLS] who wrote it ? [SEP] the book was written by jo ##hn smith . [SEP]
    # segment:   0    0    0    0  0   0    1   1    1    1     1   1  1    1     1   1

    Args:
        examples: from read_squad_examples.
        tokenizer: a BertTokenizer; wrap it in records.CachedTokenizer to tokenize each distinct
            word once (also across calls with other window settings).
        max_seq_length, doc_stride, max_query_length: the window geometry (questions are cut to
            max_query_length tokens).
        is_training: compute answer positions per window (0, the [CLS], where the window misses it).
        progress: show a tqdm bar.
    Returns:
        the features of all examples in order, with unique_ids counting from 1000000000.
    """
    check_window_settings(max_seq_length, doc_stride, max_query_length)
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    features: list[SquadFeatures] = []
    unique_id = FIRST_UNIQUE_ID
    paragraph = None
    for example_index, example in enumerate(tqdm(examples, desc="squad features", disable=not progress)):
        query_tokens = tokenizer.tokenize(example.question_text)[:max_query_length]
        query_ids = tokenizer.convert_tokens_to_ids(query_tokens)

        if example.doc_tokens is not paragraph:  # questions on one paragraph share its word list
            paragraph = example.doc_tokens
            all_doc_tokens, tok_to_orig_index, orig_to_tok_index = _tokenize_words(paragraph, tokenizer)
            all_doc_ids = _convert_long(tokenizer, all_doc_tokens)

        tok_start = tok_end = None
        if is_training and example.is_impossible:
            tok_start = tok_end = -1
        elif is_training:
            if example.start_position is None:
                raise ValueError(f"question {example.qas_id}: training features need an answer position")
            tok_start = orig_to_tok_index[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                tok_end = orig_to_tok_index[example.end_position + 1] - 1
            else:
                tok_end = len(all_doc_tokens) - 1
            tok_start, tok_end = improve_answer_span(
                all_doc_tokens, tok_start, tok_end, tokenizer, example.orig_answer_text
            )

        max_tokens_for_doc = max_seq_length - len(query_tokens) - 3  # [CLS], [SEP], [SEP]
        if doc_stride > max_tokens_for_doc:
            raise ValueError(
                f"question {example.qas_id}: doc_stride {doc_stride} is larger than the window: "
                f"max_seq_length {max_seq_length} leaves {max_tokens_for_doc} context tokens beside its "
                f"{len(query_tokens)}-token question; lower doc_stride or max_query_length"
            )
        spans = doc_spans(len(all_doc_tokens), max_tokens_for_doc, doc_stride)
        best_span = max_context_span(spans, len(all_doc_tokens))
        doc_offset = len(query_tokens) + 2
        head_tokens = ["[CLS]", *query_tokens, "[SEP]"]
        head_ids = [cls_id, *query_ids, sep_id]

        for span_index, (start, length) in enumerate(spans):
            end = start + length
            start_position = end_position = None
            if is_training:
                start_position = end_position = 0
                if not example.is_impossible and start <= tok_start and tok_end < end:
                    start_position = tok_start - start + doc_offset
                    end_position = tok_end - start + doc_offset
            features.append(
                SquadFeatures(
                    unique_id=unique_id,
                    example_index=example_index,
                    doc_span_index=span_index,
                    tokens=[*head_tokens, *all_doc_tokens[start:end], "[SEP]"],
                    token_to_orig_map=[-1] * doc_offset + tok_to_orig_index[start:end] + [-1],
                    token_is_max_context=[False] * doc_offset + (best_span[start:end] == span_index).tolist() + [False],
                    input_ids=[*head_ids, *all_doc_ids[start:end], sep_id],
                    segment_ids=[0] * doc_offset + [1] * (length + 1),
                    start_position=start_position,
                    end_position=end_position,
                    is_impossible=example.is_impossible,
                )
            )
            unique_id += 1
    logger.info("%d examples -> %d features (max_seq_length %d, doc_stride %d)",
                len(examples), len(features), max_seq_length, doc_stride)
    return features


@dataclass(frozen=True)
class SquadProcessor:
    """Finds and reads one SQuAD version's files in a data folder.

    Attributes:
        name: the task registry's name ("squad1", "squad2").
        version_2_with_negative: SQuAD 2.0 (unanswerable questions).
        files: split -> file name.
    """

    name: str
    version_2_with_negative: bool
    files: dict

    def path(self, data_dir: str | os.PathLike, split: str) -> Path:
        """The file holding `split` ("train" or "dev") inside `data_dir`."""
        if split not in self.files:
            raise ValueError(f"{self.name} has no {split!r} split (it has: {', '.join(self.files)})")
        return Path(data_dir) / self.files[split]

    def get_examples(self, data_dir: str | os.PathLike, split: str) -> list[SquadExample]:
        """Read `split`; the train split is read as training data (unrecoverable answers skipped)."""
        return read_squad_examples(self.path(data_dir, split), split == "train", self.version_2_with_negative)


SQUAD1 = SquadProcessor("squad1", False, {"train": "train-v1.1.json", "dev": "dev-v1.1.json"})
SQUAD2 = SquadProcessor("squad2", True, {"train": "train-v2.0.json", "dev": "dev-v2.0.json"})
