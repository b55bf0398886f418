"""Metrics against scikit-learn / SciPy, and the official SQuAD EM/F1 on hand-written cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert.tasks import metrics, squad_metrics
from bert.tasks.metrics import task_metrics
from bert.tasks.registry import TASKS, get_task

TRIALS = 200


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_classification_metrics_equal_sklearn_on_random_predictions(rng):
    for trial in range(TRIALS):
        n = int(rng.integers(1, 60))
        k = int(rng.integers(2, 5)) if trial % 2 else 2
        labels = rng.integers(0, k, n)
        # some trials predict mostly right, some at random, some a constant class
        preds = np.where(rng.random(n) < rng.random(), labels, rng.integers(0, k, n))
        if trial % 7 == 0:
            preds = np.full(n, int(rng.integers(0, k)))
        assert metrics.accuracy(preds, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, preds), abs=1e-12)
        expected_mcc = sklearn.metrics.matthews_corrcoef(labels, preds)
        assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(expected_mcc, abs=1e-12)
        if k == 2:
            expected_f1 = sklearn.metrics.f1_score(labels, preds, zero_division=0.0)
            assert metrics.f1_score(preds, labels) == pytest.approx(expected_f1, abs=1e-12)


def test_correlations_equal_scipy_on_random_scores(rng):
    for trial in range(TRIALS):
        n = int(rng.integers(3, 80))
        gold = rng.uniform(0, 5, n)
        if trial % 3 == 0:
            gold = np.round(gold * 2) / 2  # STS-B-like scores with many ties
        pred = gold + rng.normal(0, rng.uniform(0.1, 3), n)
        if trial % 5 == 0:
            pred = np.round(pred)  # ties in the predictions too
        assert metrics.pearson(pred, gold) == pytest.approx(scipy.stats.pearsonr(pred, gold)[0], abs=1e-12)
        assert metrics.spearman(pred, gold) == pytest.approx(scipy.stats.spearmanr(pred, gold)[0], abs=1e-12)
        np.testing.assert_array_equal(metrics.rankdata(pred), scipy.stats.rankdata(pred))


def test_degenerate_inputs_follow_the_references():
    assert metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == sklearn.metrics.matthews_corrcoef([0, 1, 0], [1, 1, 1]) == 0.0
    assert metrics.f1_score([0, 0], [0, 0]) == 0.0
    assert math.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert metrics.pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(scipy.stats.pearsonr([1, 2, 3], [2, 4, 6.5])[0])
    with pytest.raises(ValueError, match="equal-length"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero examples"):
        metrics.accuracy([], [])


def test_glue_metric_bundles_per_task():
    labels, preds = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    mrpc = task_metrics(get_task("mrpc"), preds, labels)
    assert mrpc == pytest.approx({"acc": 4 / 6, "f1": 0.75, "acc_and_f1": (4 / 6 + 0.75) / 2})
    assert set(task_metrics(get_task("cola"), preds, labels)) == {"mcc"}
    stsb = task_metrics(get_task("stsb"), [0.1, 2.0, 4.5, 3.0], [0.0, 2.5, 5.0, 2.0])
    assert set(stsb) == {"pearson", "spearmanr", "corr"}
    assert stsb["spearmanr"] == pytest.approx(0.8)
    assert task_metrics(get_task("swag"), [0, 3, 2], [0, 3, 1]) == {"acc": pytest.approx(2 / 3)}
    for name in ("sst2", "mnli", "mnli-mm", "qnli", "rte", "wnli"):
        assert set(task_metrics(TASKS[name], [0, 1], [0, 0])) == {"acc"}
    with pytest.raises(ValueError, match="squad_metrics"):
        task_metrics(get_task("squad1"), [0], [0])


# --- SQuAD: the official normalisation, EM and F1 --------------------------------------------------


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple a day", "apple day"),
        ("Theatre, anthem; the END.", "theatre anthem end"),  # articles only as whole words
        ("  Denver   Broncos!! ", "denver broncos"),
        ("“Curly quotes” — and dashes", "“curly quotes” — and dashes"),  # only ASCII punctuation goes
        ("Café ÉCLAIR", "café éclair"),
        ("A", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert squad_metrics.normalize_answer(text) == normalized


def test_em_and_f1_hand_cases():
    em, f1 = squad_metrics.exact_match_score, squad_metrics.f1_score
    assert em("the Denver Broncos", "Denver Broncos!") == 1.0
    assert em("Denver", "Denver Broncos") == 0.0
    # pred tokens {denver}, gold {denver, broncos}: P=1, R=1/2 -> F1 2/3
    assert f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred "a b b", gold "b b b c" -> common 2, P 2/3, R 2/4
    assert f1("x y y", "y y y z") == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert f1("Zürich", "zürich") == 1.0
    assert f1("nothing", "in common") == 0.0
    # v1.1 gives 0 to an empty side; v2.0 gives 1 when both are empty
    assert f1("", "") == 0.0 and f1("", "", empty_matches_empty=True) == 1.0
    assert f1("the", "", empty_matches_empty=True) == 1.0  # "the" normalises to nothing
    assert f1("Broncos", "", empty_matches_empty=True) == 0.0


def _dataset(*questions):
    return [{"paragraphs": [{"context": "unused", "qas": list(questions)}]}]


def _qa(qid, *answers):
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


def test_evaluate_v1_takes_the_best_gold_and_scores_missing_as_zero():
    data = _dataset(_qa("a", "Super Bowl 50", "the Super Bowl"), _qa("b", "1,200 metres"), _qa("c", "Paris"))
    preds = {"a": "super bowl", "b": "1200 metres"}
    result = squad_metrics.evaluate_v1(data, preds)
    # a: EM against "the Super Bowl"; b: "1,200" -> "1200" after punctuation removal: EM; c missing.
    assert result == pytest.approx({"exact_match": 200 / 3, "f1": 200 / 3})
    preds["c"] = "Paris, France"
    assert squad_metrics.evaluate_v1(data, preds)["f1"] == pytest.approx(100 * (2 + 2 * 1 * 0.5 / 1.5) / 3)


def test_evaluate_v2_no_answer_questions_and_thresholds():
    data = _dataset(
        _qa("has1", "Marie Curie"), _qa("has2", "1903", "in 1903"), _qa("no1"), _qa("no2", "the")  # only an article
    )
    preds = {"has1": "Marie Curie", "has2": "1904", "no1": "", "no2": "radium"}
    r = squad_metrics.evaluate_v2(data, preds)
    assert r["total"] == 4 and r["HasAns_total"] == 2 and r["NoAns_total"] == 2
    assert r["exact"] == pytest.approx(50.0)  # has1 and no1 right
    assert r["HasAns_exact"] == pytest.approx(50.0) and r["NoAns_exact"] == pytest.approx(50.0)
    assert "best_exact" not in r  # no na_probs given

    # No-answer probabilities: a threshold below no2's and has2's probability answers them "".
    na = {"has1": 0.1, "has2": 0.7, "no1": 0.9, "no2": 0.8}
    r = squad_metrics.evaluate_v2(data, preds, na, na_prob_thresh=0.5)
    # has1 right; has2 -> "" (wrong, gold has an answer); no1 -> "" right; no2 -> "" right
    assert r["exact"] == pytest.approx(75.0) and r["f1"] == pytest.approx(75.0)
    # best threshold: answer "" from the lowest cut that maximises the score: after has1 (0.1)
    assert r["best_exact"] == pytest.approx(75.0) and r["best_exact_thresh"] == pytest.approx(0.1)
    assert r["best_f1"] == pytest.approx(75.0) and r["best_f1_thresh"] == pytest.approx(0.1)


def test_find_best_threshold_walks_questions_by_rising_probability():
    has_answer = {"a": True, "b": True, "c": False}
    preds = {"a": "x", "b": "y", "c": "z"}
    scores = {"a": 1.0, "b": 0.5, "c": 0.0}
    # start: every question answered "" -> 1 point (c). a (p=0.2) +1 -> 2; c (p=0.3) -1 -> 1; b (0.6) +0.5
    best, thresh = squad_metrics.find_best_threshold(preds, scores, {"a": 0.2, "c": 0.3, "b": 0.6}, has_answer)
    assert best == pytest.approx(200 / 3) and thresh == 0.2
    best, thresh = squad_metrics.find_best_threshold(preds, scores, {"a": 0.2, "b": 0.3, "c": 0.6}, has_answer)
    assert best == pytest.approx(250 / 3) and thresh == 0.3
