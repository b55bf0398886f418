"""Embedding gradients accumulated as rows into persistent buffers (bert/engine/row_grads.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from bert import BertConfig, BertForMaskedLM
from bert.engine import TrainConfig, fit
from bert.engine import row_grads
from bert.engine.row_grads import RowGradients, untied_embeddings
from bert.optimization import BertAdam
from test_engine_helpers import ToyDataset, collate, tiny_model


def _batches(data, size=8):
    return [collate([data[i] for i in range(start, start + size)]) for start in (0, size)]


def test_row_gradients_equal_the_dense_ones_and_keep_their_buffer():
    model, data = tiny_model(0.0), ToyDataset(16, seed=4)
    dense = copy.deepcopy(model)
    for batch in _batches(data):  # two backward passes: gradients accumulate
        dense(**batch).backward()
    rows = RowGradients(model)
    assert {id(m) for m in rows.modules} == {id(m) for m in (model.bert.embeddings.word_embeddings,
                                                            model.bert.embeddings.position_embeddings,
                                                            model.bert.embeddings.token_type_embeddings)}
    rows.enable()
    buffer = model.bert.embeddings.word_embeddings.weight.grad
    for batch in _batches(data):
        model(**batch).backward()
    reference = dict(dense.named_parameters())
    for name, p in model.named_parameters():
        assert not p.grad.is_sparse, name
        assert torch.allclose(p.grad, reference[name].grad, rtol=0, atol=1e-6), name
    word = model.bert.embeddings.word_embeddings.weight
    assert word.grad is buffer and word.grad.abs().max() > 1e-3  # added into in place, not replaced
    assert word.grad[0].abs().max() == 0  # [PAD] (padding_idx) gets no gradient, as the dense lookup

    rows.zero_(BertAdam(model.parameters(), lr=1e-3))
    assert word.grad is buffer and word.grad.abs().max() == 0
    assert model.classifier.weight.grad is None  # the rest: set to None as zero_grad(set_to_none=True)
    rows.disable()
    assert word.grad is None and not model.bert.embeddings.word_embeddings.sparse


def test_a_tied_word_embedding_keeps_its_dense_gradient():
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    model = BertForMaskedLM(config)
    found = untied_embeddings(model)
    assert model.bert.embeddings.word_embeddings not in found  # the MLM decoder shares its weight
    assert model.bert.embeddings.position_embeddings in found


def test_fit_with_row_gradients_trains_the_same_weights_and_hands_back_a_dense_model(tmp_path, monkeypatch):
    data = ToyDataset(96, seed=5)
    cfg = TrainConfig(global_batch_size=16, epochs=2.0, learning_rate=1e-3)
    with_rows, plain = tiny_model(0.1, seed=1), tiny_model(0.1, seed=1)
    fit(with_rows, data, collate, cfg, tmp_path / "rows", lengths=data.lengths, progress=False)
    monkeypatch.setattr(row_grads, "untied_embeddings", lambda model: [])
    fit(plain, data, collate, cfg, tmp_path / "plain", lengths=data.lengths, progress=False)
    reference = dict(plain.named_parameters())
    worst = max((p - reference[n]).abs().max().item() for n, p in with_rows.named_parameters())
    moved = (with_rows.bert.embeddings.word_embeddings.weight
             - tiny_model(0.1, seed=1).bert.embeddings.word_embeddings.weight).abs().max().item()
    print(f"12 steps: max |weight difference| row vs dense gradients {worst:.3g} (embeddings moved {moved:.3g})")
    assert worst < 1e-5 and moved > 1e-3
    embeddings = [m for m in with_rows.modules() if isinstance(m, torch.nn.Embedding)]
    assert len(embeddings) == 3 and all(not m.sparse and m.weight.grad is None for m in embeddings)


def test_a_failing_run_still_hands_back_a_dense_model(tmp_path):
    data, model, calls = ToyDataset(64, seed=6), tiny_model(0.0), []

    def failing_collate(items):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("bad batch")
        return collate(items)

    with pytest.raises(RuntimeError, match="^bad batch$"):
        fit(model, data, failing_collate, TrainConfig(global_batch_size=8), tmp_path, lengths=data.lengths,
            progress=False)
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert all(not m.sparse and m.weight.grad is None for m in embeddings)
