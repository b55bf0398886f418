"""The official SQuAD evaluation: v1.1 (EM, F1) and v2.0 (with HasAns/NoAns and best thresholds).

Both normalise an answer the same way: lower case, drop ASCII punctuation, drop the articles
a/an/the, collapse whitespace. EM and F1 take the maximum over a question's gold answers.
v1.1 scores a prediction against empty tokens as F1 0; v2.0 treats an unanswerable question's
gold answer as "" and scores an empty prediction against it 1. Scores are percentages.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from typing import Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower case, remove punctuation, articles and extra whitespace (the official normalisation)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when both normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str, empty_matches_empty: bool = False) -> float:
    """Token-overlap F1 of two answers after normalisation.

    Args:
        prediction, ground_truth: answer texts.
        empty_matches_empty: the v2.0 rule: when either side has no tokens, F1 is 1 if both have
            none, else 0 (v1.1 gives 0 whenever there is no overlap).
    Returns:
        F1 in [0, 1].
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if empty_matches_empty and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _questions(dataset: Sequence) -> list[dict]:
    return [qa for article in dataset for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def evaluate_v1(dataset: Sequence, predictions: Mapping[str, str]) -> dict[str, float]:
    """The official v1.1 evaluation.

    Args:
        dataset: the ``data`` list of the SQuAD JSON (squad.load_squad_json).
        predictions: question id -> answer text. A missing question scores 0 (and is logged).
    Returns:
        {"exact_match": ..., "f1": ...} in percent.
    """
    exact = f1 = 0.0
    questions = _questions(dataset)
    missing = 0
    for qa in questions:
        if qa["id"] not in predictions:
            missing += 1
            continue
        golds = [answer["text"] for answer in qa["answers"]]
        prediction = predictions[qa["id"]]
        exact += max(exact_match_score(prediction, g) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(questions))
    total = len(questions)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def raw_scores_v2(dataset: Sequence, predictions: Mapping[str, str]) -> tuple[dict, dict, dict]:
    """Per-question v2.0 EM and F1 before any no-answer threshold.

    Returns:
        (exact, f1, has_answer): question id -> score in {0,1} / [0,1], and whether it is answerable.
        Questions without a prediction are absent from the scores (and logged).
    """
    exact, f1, has_answer = {}, {}, {}
    missing = 0
    for qa in _questions(dataset):
        qid = qa["id"]
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
        has_answer[qid] = bool(golds)
        if not golds:
            golds = [""]  # an unanswerable question: the right answer is no answer
        if qid not in predictions:
            missing += 1
            continue
        prediction = predictions[qid]
        exact[qid] = max(exact_match_score(prediction, g) for g in golds)
        f1[qid] = max(f1_score(prediction, g, empty_matches_empty=True) for g in golds)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(has_answer))
    return exact, f1, has_answer


def apply_no_answer_threshold(scores: dict, na_probs: Mapping[str, float], has_answer: dict, threshold: float) -> dict:
    """Scores with questions whose no-answer probability exceeds `threshold` answered "" instead."""
    return {
        qid: float(not has_answer[qid]) if na_probs[qid] > threshold else s for qid, s in scores.items()
    }


def find_best_threshold(predictions, scores: dict, na_probs: Mapping[str, float], has_answer: dict):
    """The no-answer threshold that maximises the total score (the official find_best_thresh).

    Questions are answered "" in order of rising no-answer probability; the best cut is kept.

    Returns:
        (best score in percent, threshold).
    """
    cur_score = best_score = sum(1 for qid in has_answer if not has_answer[qid])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(
    dataset: Sequence,
    predictions: Mapping[str, str],
    na_probs: Optional[Mapping[str, float]] = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The official v2.0 evaluation.

    Args:
        dataset: the ``data`` list of the SQuAD 2.0 JSON.
        predictions: question id -> answer text ("" for no answer).
        na_probs: question id -> no-answer probability or score (e.g. null_odds.json); without it
            every question gets 0 and no best threshold is searched.
        na_prob_thresh: predict no answer above this no-answer probability.
    Returns:
        exact, f1, total; HasAns_* and NoAns_* when there are such questions; and with na_probs
        best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    exact_raw, f1_raw, has_answer = raw_scores_v2(dataset, predictions)
    # a question without prediction scores 0 (the official script would fail on it)
    for qid in has_answer:
        exact_raw.setdefault(qid, 0.0)
        f1_raw.setdefault(qid, 0.0)
    probs = dict(na_probs) if na_probs is not None else {qid: 0.0 for qid in predictions}
    for qid in has_answer:
        probs.setdefault(qid, 0.0)
    exact = apply_no_answer_threshold(exact_raw, probs, has_answer, na_prob_thresh)
    f1 = apply_no_answer_threshold(f1_raw, probs, has_answer, na_prob_thresh)

    def summary(qids: list[str], prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
            f"{prefix}total": len(qids),
        }

    out = summary(list(has_answer))
    has_ans = [q for q, h in has_answer.items() if h]
    no_ans = [q for q, h in has_answer.items() if not h]
    if has_ans:
        out.update(summary(has_ans, "HasAns_"))
    if no_ans:
        out.update(summary(no_ans, "NoAns_"))
    if na_probs is not None:
        preds = {qid: predictions.get(qid, "") for qid in has_answer}
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(preds, exact_raw, probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(preds, f1_raw, probs, has_answer)
    return out
