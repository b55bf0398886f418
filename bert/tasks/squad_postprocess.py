"""SQuAD post-processing: start/end logits of every window -> n-best answers and the final answer.

As run_squad.py's write_predictions: per window, the n_best_size highest start and end logits are
paired; pairs outside the context, not in the token's max-context window, reversed, or longer than
max_answer_length are dropped; the rest are ranked by start + end logit over all windows of the
question, mapped back to the original text (``get_final_text``) and de-duplicated. SQuAD 2.0 adds
the null answer ([CLS]) scored by the lowest null logit over the windows; the question is answered
"" when null score - best non-null score exceeds ``null_score_diff_threshold``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from bert.io.fileio import atomic_write_text
from bert.tasks.records import SquadExample, SquadFeatures, SquadResult
from bert.tokenization import BasicTokenizer


@dataclass
class SquadPredictions:
    """What post-processing produces, keyed by question id.

    predictions: the answer text ("" for no answer, SQuAD 2.0).
    nbest: the n-best list, each {"text", "probability", "start_logit", "end_logit"}.
    null_odds: SQuAD 2.0 only, null score minus the best non-null score (the official script's
        na_prob file takes it as is).
    """

    predictions: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[dict]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)


def get_final_text(
    pred_text: str, orig_text: str, do_lower_case: bool, basic_tokenizer: Optional[BasicTokenizer] = None
) -> str:
    """Project a de-tokenized prediction back onto the original text.

    The prediction is normalised text ("steve smith" for the words "Steve Smith's"); the answer should
    be the matching characters of the original. The original span is BasicTokenized, the prediction
    found in it, and both are aligned character by character once spaces are removed. When that
    fails (the prediction is not found, or tokenization changed the character count) the whole
    original span is returned, as the original does.

    Args:
        pred_text: the WordPiece tokens of the answer joined, "##" removed.
        orig_text: the whitespace words the answer's tokens came from, joined by spaces.
        do_lower_case: as the tokenizer that made the tokens.
        basic_tokenizer: reuse one (it must lower-case as do_lower_case says).
    Returns:
        the answer text.
    """
    tokenizer = basic_tokenizer or BasicTokenizer(do_lower_case=do_lower_case)
    return _align(pred_text, orig_text, " ".join(tokenizer.tokenize(orig_text)))


def _align(pred_text: str, orig_text: str, tok_text: str) -> str:
    """get_final_text once the original span's BasicTokenizer text `tok_text` is known."""
    start_position = tok_text.find(pred_text)
    if start_position == -1:
        return orig_text
    end_position = start_position + len(pred_text) - 1

    orig_ns_to_s = [i for i, c in enumerate(orig_text) if c != " "]
    tok_ns_to_s = [i for i, c in enumerate(tok_text) if c != " "]
    if len(orig_ns_to_s) != len(tok_ns_to_s):
        return orig_text
    # the k-th non-space character of tok_text pairs with the k-th non-space character of orig_text
    tok_s_to_ns = {s: ns for ns, s in enumerate(tok_ns_to_s)}
    if start_position not in tok_s_to_ns or end_position not in tok_s_to_ns:
        return orig_text
    orig_start = orig_ns_to_s[tok_s_to_ns[start_position]]
    orig_end = orig_ns_to_s[tok_s_to_ns[end_position]]
    return orig_text[orig_start : orig_end + 1]


class _BasicWords:
    """BasicTokenizer text of a run of whitespace words, memoised per word.

    BasicTokenizer cleans and splits character by character and at whitespace, so the tokens of
    words joined by spaces are the words' tokens in sequence: caching per word is exact.
    """

    def __init__(self, do_lower_case: bool) -> None:
        self.tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.cache: dict[str, str] = {}

    def text(self, words: Sequence[str]) -> str:
        out = []
        for word in words:
            tokens = self.cache.get(word)
            if tokens is None:
                tokens = self.cache[word] = " ".join(self.tokenizer.tokenize(word))
            if tokens:
                out.append(tokens)
        return " ".join(out)


def _softmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _top_indexes(logits: np.ndarray, n: int) -> np.ndarray:
    # highest first; ties keep position order (Python's stable sorted(..., reverse=True))
    return np.argsort(-logits, kind="stable")[:n]


def _window_candidates(feature: SquadFeatures, start_logits, end_logits, n_best_size: int, max_answer_length: int):
    """(start, end, start logit, end logit) arrays of one window's valid answer spans, loop order."""
    s = np.asarray(start_logits, dtype=np.float64)
    e = np.asarray(end_logits, dtype=np.float64)
    size = max(len(s), len(e), len(feature.tokens))
    in_context = np.zeros(size, dtype=bool)  # positions past the tokens (padding) stay False
    max_context = np.zeros(size, dtype=bool)
    in_context[: len(feature.tokens)] = np.asarray(feature.token_to_orig_map) >= 0
    max_context[: len(feature.tokens)] = feature.token_is_max_context
    starts = _top_indexes(s, n_best_size)[:, None]
    ends = _top_indexes(e, n_best_size)[None, :]
    valid = (
        in_context[starts] & in_context[ends] & max_context[starts]
        & (ends >= starts) & (ends - starts + 1 <= max_answer_length)
    )  # fmt: skip
    rows, cols = np.nonzero(valid)  # row-major: the original's nested loop order
    start, end = starts[rows, 0], ends[0, cols]
    return start, end, s[start], e[end]


def _answer_text(example: SquadExample, feature: SquadFeatures, start: int, end: int, basic: _BasicWords) -> str:
    pred_text = " ".join(feature.tokens[start : end + 1])
    pred_text = pred_text.replace(" ##", "").replace("##", "")  # de-tokenize WordPieces
    pred_text = " ".join(pred_text.strip().split())
    orig_start, orig_end = feature.token_to_orig_map[start], feature.token_to_orig_map[end]
    orig_words = example.doc_tokens[orig_start : orig_end + 1]
    return _align(pred_text, " ".join(orig_words), basic.text(orig_words))


def compute_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[SquadFeatures],
    results: Iterable[SquadResult],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    do_lower_case: bool = True,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    progress: bool = False,
) -> SquadPredictions:
    """Answers from the model's logits.

    Args:
        examples, features: as read and converted (features point at examples by example_index).
        results: one SquadResult per feature (logits may be padded past the feature's tokens).
        n_best_size: answers kept per question (and start/end candidates per window).
        max_answer_length: the longest answer in tokens.
        do_lower_case: as the tokenizer.
        version_2_with_negative: SQuAD 2.0 (null answers, null odds).
        null_score_diff_threshold: predict "" when null score - best non-null score exceeds it.
        progress: show a tqdm bar.
    Returns:
        SquadPredictions with predictions, nbest and (v2) null_odds.
    """
    by_id = {r.unique_id: r for r in results}
    by_example: dict[int, list[SquadFeatures]] = defaultdict(list)
    for feature in features:
        if feature.unique_id not in by_id:
            raise ValueError(f"no result for feature unique_id {feature.unique_id}")
        by_example[feature.example_index].append(feature)
    basic = _BasicWords(do_lower_case)
    out = SquadPredictions()
    for example_index, example in enumerate(tqdm(examples, desc="squad answers", disable=not progress)):
        window_features = by_example.get(example_index, [])
        parts = []  # per window: (feature index, start, end, start logit, end logit)
        score_null, null_feature, null_logits = 1e6, 0, (0.0, 0.0)  # the original's large initial value
        for fi, feature in enumerate(window_features):
            result = by_id[feature.unique_id]
            if version_2_with_negative:
                null = float(result.start_logits[0]) + float(result.end_logits[0])
                if null < score_null:
                    score_null, null_feature = null, fi
                    null_logits = (float(result.start_logits[0]), float(result.end_logits[0]))
            start, end, sl, el = _window_candidates(
                feature, result.start_logits, result.end_logits, n_best_size, max_answer_length
            )
            parts.append((np.full(len(start), fi), start, end, sl, el))
        if version_2_with_negative:  # the null answer, last among equal scores
            parts.append((np.array([null_feature]), np.array([0]), np.array([0]),
                          np.array([null_logits[0]]), np.array([null_logits[1]])))  # fmt: skip
        cand = [np.concatenate(column) for column in zip(*parts)] if parts else [np.zeros(0)] * 5
        order = np.argsort(-(cand[3] + cand[4]), kind="stable")

        seen: set[str] = set()
        nbest: list[tuple[str, float, float]] = []
        for k in order:
            if len(nbest) >= n_best_size:
                break
            fi, start, end = int(cand[0][k]), int(cand[1][k]), int(cand[2][k])
            if start > 0:  # a span, not the null answer
                text = _answer_text(example, window_features[fi], start, end, basic)
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append((text, float(cand[3][k]), float(cand[4][k])))
        if version_2_with_negative and "" not in seen:
            nbest.append(("", *null_logits))
        if not any(text for text, _, _ in nbest):
            # no valid span at all (rare): a placeholder, as the original does, so there is an answer
            nbest.append(("empty", 0.0, 0.0))

        probs = _softmax([sl + el for _, sl, el in nbest])
        out.nbest[example.qas_id] = [
            {"text": text, "probability": p, "start_logit": sl, "end_logit": el}
            for (text, sl, el), p in zip(nbest, probs)
        ]
        best_non_null = next(entry for entry in nbest if entry[0])
        if not version_2_with_negative:
            out.predictions[example.qas_id] = nbest[0][0]
        else:
            score_diff = score_null - best_non_null[1] - best_non_null[2]
            out.null_odds[example.qas_id] = score_diff
            out.predictions[example.qas_id] = "" if score_diff > null_score_diff_threshold else best_non_null[0]
    return out


def write_predictions(predictions: SquadPredictions, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write predictions.json, nbest_predictions.json and (SQuAD 2.0) null_odds.json atomically.

    Args:
        predictions: from compute_predictions.
        output_dir: the folder to write into.
    Returns:
        {"predictions": path, "nbest": path, ("null_odds": path)}.
    """
    output_dir = Path(output_dir)
    files = {"predictions": ("predictions.json", predictions.predictions),
             "nbest": ("nbest_predictions.json", predictions.nbest)}  # fmt: skip
    if predictions.null_odds:
        files["null_odds"] = ("null_odds.json", predictions.null_odds)
    paths = {}
    for key, (name, content) in files.items():
        paths[key] = output_dir / name
        atomic_write_text(paths[key], json.dumps(content, indent=4, ensure_ascii=False) + "\n")
    return paths
