"""Multi-label classification: BertForSequenceClassification's loss by problem_type as HF's (binary cross-entropy
on multi-hot labels), from_pretrained's problem_type, and micro/macro F1 against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert.modeling import BertForSequenceClassification
from bert.tasks.metrics import multilabel_f1
from predict_helpers import tiny_config

transformers = pytest.importorskip("transformers")


def _pair(problem_type):
    config = tiny_config()
    if problem_type:
        config.problem_type = problem_type
    torch.manual_seed(0)
    ours = BertForSequenceClassification(config, num_labels=4).eval()
    hf_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "problem_type"},
                                        num_labels=4, problem_type=problem_type)
    hf = transformers.BertForSequenceClassification(hf_config).eval()
    hf.load_state_dict(ours.state_dict(), strict=False)
    return ours, hf


@pytest.mark.parametrize("problem_type, labels", [
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])),
    (None, torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])),  # float labels shaped as the logits
    ("single_label_classification", torch.tensor([3, 1])),
    ("regression", torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])),
])
def test_the_loss_is_hf_s(problem_type, labels):
    ours, hf = _pair(problem_type)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    expected = hf(ids, attention_mask=mask, labels=labels).loss
    got = ours(ids, attention_mask=mask, labels=labels)
    assert abs(got.item() - expected.item()) < 1e-6
    if problem_type == "multi_label_classification":
        logits = ours(ids, attention_mask=mask)
        assert abs(got.item() - torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()) < 1e-6


def test_from_pretrained_takes_problem_type_and_a_bad_one_is_named(tmp_path):
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_config(), num_labels=3).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path, problem_type="multi_label_classification")
    assert model.config.problem_type == "multi_label_classification" and model.num_labels == 3
    model.config.problem_type = "ranking"
    with pytest.raises(ValueError, match="problem_type must be one of .* got 'ranking'"):
        model(torch.tensor([[2, 3]]), labels=torch.tensor([1]))


def test_micro_and_macro_f1_are_sklearn_s():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.random((30, 5)) < 0.3
        preds = rng.random((30, 5)) < (0.1 if trial % 4 == 0 else 0.4)
        if trial % 5 == 0:
            labels[:, 2] = preds[:, 2] = False  # a label nobody has: it counts 0 in the macro mean, as sklearn's
        for average in ("micro", "macro"):
            expected = sklearn_metrics.f1_score(labels, preds, average=average, zero_division=0)
            assert multilabel_f1(preds.astype(int), labels.astype(int), average) == pytest.approx(expected, abs=1e-12)
    assert multilabel_f1([[0, 0]], [[0, 0]]) == 0.0
    with pytest.raises(ValueError, match="equal, non-empty"):
        multilabel_f1([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="'micro' or 'macro'"):
        multilabel_f1([[1]], [[1]], "weighted")
