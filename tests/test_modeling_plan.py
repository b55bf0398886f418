"""The model's execution plan: forward never reads values off the device, packing made where the batch is
made gives the numbers of packing made in forward, and the weights are initialised once.

"Never reads values" is checked on the meta device, which has shapes and no values: any ``.item()``,
``bool(tensor)``, ``.tolist()`` or ``nonzero()`` there raises, as on a GPU it would make the host wait.
fp32 tolerance 1e-5.
"""

from __future__ import annotations

import pytest
import torch

import bert
from bert.data.cache import pad_collate
from bert.data.pretraining_data import pretraining_collate
from bert.model.plan import Packing

TOL = 1e-5

# (class, constructor kwargs, label keyword arguments for a [B, T] batch)
HEADS = [
    ("BertModel", {}, {}),
    ("BertForPreTraining", {}, {"masked_lm_labels": "mlm", "next_sentence_label": torch.tensor([0, 1, 1])}),
    ("BertForMaskedLM", {}, {"masked_lm_labels": "mlm"}),
    ("BertForNextSentencePrediction", {}, {"next_sentence_label": torch.tensor([0, 1, 1])}),
    ("BertForSequenceClassification", {"num_labels": 3}, {"labels": torch.tensor([2, 0, 1])}),
    ("BertForTokenClassification", {"num_labels": 4}, {"labels": "tokens"}),
    ("BertForQuestionAnswering", {}, {"start_positions": torch.tensor([1, 2, 0]),
                                      "end_positions": torch.tensor([3, 2, 9])}),
]


def _items(lengths: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for n in lengths:
        ids = torch.randint(5, 99, (n,), generator=g)
        ids[0] = 2  # [CLS]
        items.append({"input_ids": ids, "token_type_ids": (torch.arange(n) >= n // 2).long()})
    return items


def _labels(kind, batch: dict, g: torch.Generator):
    if not isinstance(kind, str):
        return kind
    if kind == "tokens":
        return torch.randint(0, 4, batch["input_ids"].shape, generator=g)
    labels = torch.full_like(batch["input_ids"], -1)  # "mlm": a few real positions labelled
    labels[0, 2], labels[1, 1], labels[2, 3] = 7, 11, 50
    return labels


def _to(value, device):
    return value.to(device) if isinstance(value, (torch.Tensor, Packing)) else value


@pytest.mark.parametrize("name, kwargs, labels", HEADS, ids=[h[0] for h in HEADS])
def test_forward_never_reads_the_device(name, kwargs, labels, tiny_config):
    """On the meta device (a stand-in for a GPU: no values to read), with the packing the data loader makes,
    and without it (then the padded path runs), in training and eval mode, with and without labels."""
    batch = pad_collate(_items([7, 4, 5]))
    assert "packing" in batch
    batch_labels = {k: _labels(v, batch, torch.Generator().manual_seed(1)) for k, v in labels.items()}
    if "masked_lm_labels" in batch_labels:
        batch["packing"] = Packing.from_mask(batch["attention_mask"], batch_labels["masked_lm_labels"])
    model = getattr(bert, name)(tiny_config, **kwargs).to("meta")
    for mode in ("train", "eval"):
        getattr(model, mode)()
        for with_packing in (True, False):
            inputs = {k: _to(v, "meta") for k, v in batch.items() if with_packing or k != "packing"}
            model(**inputs, **{k: _to(v, "meta") for k, v in batch_labels.items()})
            if name != "BertModel":
                model(**inputs)  # the logits


def test_multiple_choice_never_reads_the_device(tiny_config):
    rows = _items([6, 3, 5, 4, 7, 2])
    items = [{k: torch.nn.utils.rnn.pad_sequence([rows[2 * i + c][k] for c in range(2)], batch_first=True)
              for k in ("input_ids", "token_type_ids")} for i in range(3)]
    batch = pad_collate(items)
    assert batch["input_ids"].shape[:2] == (3, 2)
    model = bert.BertForMultipleChoice(tiny_config).to("meta").train()
    model(**{k: _to(v, "meta") for k, v in batch.items()}, labels=torch.tensor([0, 1, 1], device="meta"))


@pytest.mark.parametrize("name, kwargs, labels", HEADS[1:], ids=[h[0] for h in HEADS[1:]])
def test_packing_from_the_loader_gives_forwards_own_numbers(name, kwargs, labels, tiny_config):
    """The same losses and logits with the collate function's packing as with forward packing the CPU batch
    itself, and as the padded computation for the loss (labels never sit on padding)."""
    torch.manual_seed(0)
    model = getattr(bert, name)(tiny_config, **kwargs).eval()
    batch = pad_collate(_items([9, 3, 6], seed=2))
    batch_labels = {k: _labels(v, batch, torch.Generator().manual_seed(3)) for k, v in labels.items()}
    if "masked_lm_labels" in batch_labels:
        batch["packing"] = pretraining_collate(
            [{**item, "masked_lm_labels": lab[: len(item["input_ids"])]}
             for item, lab in zip(_items([9, 3, 6], seed=2), batch_labels["masked_lm_labels"])])["packing"]
    plain = {k: v for k, v in batch.items() if k != "packing"}
    with torch.no_grad():
        given = model(**batch, **batch_labels)
        own = model(**plain, **batch_labels)
    assert abs(given.item() - own.item()) < TOL


def test_weights_are_initialised_once(tiny_config, monkeypatch):
    """The outermost constructor initialises every module once (the original initialised a head's encoder twice)."""
    calls = []
    original = bert.modeling.BertPreTrainedModel.init_bert_weights
    monkeypatch.setattr(bert.modeling.BertPreTrainedModel, "init_bert_weights",
                        lambda self, module: calls.append(module) or original(self, module))
    for name in ("BertModel", "BertForPreTraining", "BertForSequenceClassification"):
        calls.clear()
        model = getattr(bert, name)(tiny_config)
        assert len(calls) == len(list(model.modules())), name
        assert len({id(m) for m in calls}) == len(calls), name


def test_a_failed_constructor_leaves_the_next_one_initialising(tiny_config):
    with pytest.raises(ValueError, match="num_labels"):
        bert.BertForSequenceClassification(tiny_config, num_labels=0)
    torch.manual_seed(0)
    model = bert.BertModel(tiny_config)
    assert model.encoder.layer[0].output.dense.bias.abs().sum() == 0  # initialised: biases zeroed
    assert abs(model.embeddings.word_embeddings.weight.std().item() - tiny_config.initializer_range) < 0.005
