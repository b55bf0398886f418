"""Tiny-config checks of every head: shapes, loss, backward, padding invariance, input errors, tracing."""

from __future__ import annotations

import pytest
import torch

import bert
from bert import BertConfig, BertModel

B, S = 3, 11


def _inputs(config, batch=B, seq=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.vocab_size, (batch, seq), generator=g)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq // 2:] = 1
    return input_ids, token_type_ids


HEAD_CASES = {
    "BertForPreTraining": ({}, lambda c: {"masked_lm_labels": torch.randint(-1, c.vocab_size, (B, S)),
                                          "next_sentence_label": torch.tensor([0, 1, 0])}),
    "BertForMaskedLM": ({}, lambda c: {"masked_lm_labels": torch.randint(-1, c.vocab_size, (B, S))}),
    "BertForNextSentencePrediction": ({}, lambda c: {"next_sentence_label": torch.tensor([0, 1, 1])}),
    "BertForSequenceClassification": ({"num_labels": 3}, lambda c: {"labels": torch.tensor([0, 2, 1])}),
    "BertForTokenClassification": ({"num_labels": 4}, lambda c: {"labels": torch.randint(0, 4, (B, S))}),
    "BertForQuestionAnswering": ({}, lambda c: {"start_positions": torch.tensor([1, 2, 3]),
                                                "end_positions": torch.tensor([4, 5, 99])}),
}


def _logit_shapes(name, config):
    return {
        "BertForPreTraining": [(B, S, config.vocab_size), (B, 2)],
        "BertForMaskedLM": [(B, S, config.vocab_size)],
        "BertForNextSentencePrediction": [(B, 2)],
        "BertForSequenceClassification": [(B, 3)],
        "BertForTokenClassification": [(B, S, 4)],
        "BertForQuestionAnswering": [(B, S), (B, S)],
    }[name]


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_head_shapes_loss_backward(name, tiny_config):
    kwargs, make_labels = HEAD_CASES[name]
    torch.manual_seed(0)
    model = getattr(bert, name)(tiny_config, **kwargs)
    input_ids, token_type_ids = _inputs(tiny_config)
    out = model(input_ids, token_type_ids)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    assert [tuple(o.shape) for o in outs] == _logit_shapes(name, tiny_config)
    loss = model(input_ids, token_type_ids, **make_labels(tiny_config))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_multiple_choice_shapes_and_loss(tiny_config):
    model = bert.BertForMultipleChoice(tiny_config)
    input_ids = torch.randint(1, 99, (2, 4, 7))
    logits = model(input_ids, torch.zeros_like(input_ids), torch.ones_like(input_ids))
    assert logits.shape == (2, 4)
    loss = model(input_ids, labels=torch.tensor([3, 0]))
    loss.backward()
    assert model.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="num_choices"):
        model(input_ids[0])


def test_regression_head_uses_mse(tiny_config):
    model = bert.BertForSequenceClassification(tiny_config, num_labels=1).eval()
    input_ids, _ = _inputs(tiny_config)
    labels = torch.tensor([0.5, 2.0, 4.5])
    logits = model(input_ids)
    expected = ((logits.view(-1) - labels) ** 2).mean()
    assert torch.allclose(model(input_ids, labels=labels), expected)


def test_mlm_ignores_minus_one_and_minus_hundred(tiny_config):
    model = bert.BertForMaskedLM(tiny_config).eval()
    input_ids, _ = _inputs(tiny_config)
    labels = torch.full((B, S), -1)
    labels[0, 3] = 7
    other = labels.clone()
    other[other == -1] = -100
    logits = model(input_ids)
    expected = torch.nn.functional.cross_entropy(logits[0, 3][None], torch.tensor([7]))
    assert torch.allclose(model(input_ids, masked_lm_labels=labels), expected, atol=1e-6)
    assert torch.allclose(model(input_ids, masked_lm_labels=other), expected, atol=1e-6)


def test_mlm_decoder_is_tied_to_word_embeddings(tiny_config):
    model = bert.BertForPreTraining(tiny_config)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_qa_positions_outside_sequence_are_ignored(tiny_config):
    model = bert.BertForQuestionAnswering(tiny_config).eval()
    input_ids, _ = _inputs(tiny_config)
    start_logits, end_logits = model(input_ids)
    # The third example's end is past the sequence: clamped to S and ignored.
    loss = model(input_ids, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([4, 5, 99]))
    ce = torch.nn.functional.cross_entropy
    expected = (ce(start_logits, torch.tensor([1, 2, 3])) + ce(end_logits[:2], torch.tensor([4, 5]))) / 2
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(HEAD_CASES) + ["BertModel"])
def test_padding_never_changes_unpadded_outputs(name, tiny_config):
    torch.manual_seed(0)
    kwargs = HEAD_CASES.get(name, ({}, None))[0]
    model = getattr(bert, name)(tiny_config, **kwargs).eval()
    input_ids, token_type_ids = _inputs(tiny_config, batch=1, seq=7)
    padded_ids = torch.cat([input_ids, torch.randint(1, 99, (1, 5))], dim=1)  # garbage after the end
    padded_types = torch.cat([token_type_ids, torch.ones(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        short = model(input_ids, token_type_ids, torch.ones(1, 7, dtype=torch.long))
        long = model(padded_ids, padded_types, mask)
    if name == "BertModel":
        short, long = [short.encoded_layers[-1], short.pooled_output], [long.encoded_layers[-1], long.pooled_output]
    short = [short] if isinstance(short, torch.Tensor) else list(short)
    long = [long] if isinstance(long, torch.Tensor) else list(long)
    for a, b in zip(short, long):
        if b.dim() >= 2 and b.shape[1] == 12:  # per-token output: compare the real tokens only
            b = b[:, :7]
        assert (a - b).abs().max().item() < 1e-5


def test_output_all_encoded_layers_and_named_fields(tiny_config):
    model = BertModel(tiny_config).eval()
    input_ids, _ = _inputs(tiny_config)
    layers, pooled = model(input_ids)
    assert isinstance(layers, list) and len(layers) == 2 and layers[0].shape == (B, S, 32)
    out = model(input_ids, output_all_encoded_layers=False)
    assert torch.equal(out.encoded_layers, layers[-1]) and torch.equal(out.pooled_output, pooled)
    with_probs = model(input_ids, output_attentions=True)
    assert len(with_probs.attentions) == 2 and with_probs.attentions[0].shape == (B, 4, S, S)
    assert torch.allclose(with_probs.attentions[0].sum(-1), torch.ones(B, 4, S))


def test_initialisation_as_the_original(tiny_config):
    torch.manual_seed(0)
    model = bert.BertForPreTraining(BertConfig(**{**tiny_config.to_dict(), "vocab_size": 2000,
                                                  "hidden_size": 64, "initializer_range": 0.05}))
    std = model.bert.embeddings.word_embeddings.weight[1:].std().item()
    assert abs(std - 0.05) < 0.003
    assert torch.all(model.bert.encoder.layer[0].output.LayerNorm.weight == 1)
    assert torch.all(model.bert.encoder.layer[0].attention.self.query.bias == 0)
    assert torch.all(model.cls.predictions.bias == 0)


@pytest.mark.parametrize(
    "ids, types, message",
    [
        (torch.full((1, 65), 5), None, "max_position_embeddings"),
        (torch.tensor([[1, 2, 99]]), None, "id 99, outside the vocabulary"),
        (torch.tensor([[1, -3, 9]]), None, "id -3"),
        (torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 2]]), "token_type_ids"),
        (torch.tensor([1, 2, 3]), None, r"\[batch, seq_len\]"),
    ],
)
def test_bad_inputs_are_clear_errors(ids, types, message, tiny_config):
    model = BertModel(tiny_config)
    with pytest.raises(ValueError, match=message):
        model(ids, types)


def test_jit_trace_matches_eager(tiny_config):
    model = bert.BertForSequenceClassification(tiny_config, num_labels=2).eval()
    input_ids, token_type_ids = _inputs(tiny_config)
    mask = torch.ones_like(input_ids)
    traced = torch.jit.trace(model, (input_ids, token_type_ids, mask))
    other_ids, other_types = _inputs(tiny_config, seed=1)
    with torch.no_grad():
        assert torch.allclose(traced(other_ids, other_types, mask), model(other_ids, other_types, mask), atol=1e-6)
    traced_base = torch.jit.trace(BertModel(tiny_config).eval(), (input_ids, token_type_ids, mask), strict=False)
    assert len(traced_base(input_ids, token_type_ids, mask)[0]) == 2


@pytest.mark.slow
def test_torch_compile_matches_eager(tiny_config):
    torch._dynamo.reset()
    model = bert.BertForQuestionAnswering(tiny_config).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    input_ids, token_type_ids = _inputs(tiny_config)
    with torch.no_grad():
        expected = model(input_ids, token_type_ids)
        got = compiled(input_ids, token_type_ids)
    assert torch.allclose(got.start_logits, expected.start_logits, atol=1e-6)
    base = torch.compile(BertModel(tiny_config).eval(), backend="eager", fullgraph=True)
    layers, pooled = base(input_ids, token_type_ids)
    assert pooled.shape == (B, 32)
