"""The fast paths of bert/modeling.py give the numbers of the plain paths.

Fused QKV projection vs three separate ones; packed real tokens (skip_padding, pooled()) vs the padded
computation; the explicit training attention vs SDPA; masked-LM loss on labelled positions only vs the
full vocabulary projection; the fast dropout mask's statistics. fp32 tolerance 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bert
from bert import BertModel
from bert.model.dropout import dropout_mask
from bert.model.plan import EncoderPlan
from bert.modeling import BertSelfAttention

TOL = 1e-5


def _batch(vocab: int, lengths: list[int], seq: int, seed: int = 0, left_pad_row: int | None = None):
    """Random ids with the given true lengths; one row optionally padded on the left ([CLS] is padding)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (len(lengths), seq), generator=g)
    positions = torch.arange(seq)[None, :]
    mask = (positions < torch.tensor(lengths)[:, None]).long()
    if left_pad_row is not None:
        mask[left_pad_row] = mask[left_pad_row].flip(0)
    types = ((positions >= torch.tensor(lengths)[:, None] // 2) & mask.bool()).long()
    return input_ids.masked_fill(mask == 0, 0), types, mask


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertModel.from_pretrained(minilm_dir).eval()


def test_packed_tokens_match_padded_computation_on_real_weights(minilm):
    ids, types, mask = _batch(30522, [40, 17, 5, 40], 40, left_pad_row=2)
    with torch.no_grad():
        padded = minilm(ids, types, mask)
        packed = minilm(ids, types, mask, skip_padding=True)
    computed = mask.bool().clone()
    computed[:, 0] = True  # position 0 is computed even where it is padding: the pooler reads it
    worst = max((a[computed] - b[computed]).abs().max().item()
                for a, b in zip(padded.encoded_layers, packed.encoded_layers))
    assert worst < TOL
    assert all(torch.all(layer[~computed] == 0) for layer in packed.encoded_layers)
    assert (padded.pooled_output - packed.pooled_output).abs().max().item() < TOL
    with torch.no_grad():
        assert (minilm.pooled(ids, types, mask) - padded.pooled_output).abs().max().item() < TOL
        # no padding at all, and no mask: pooled() still computes [CLS] alone in the last layer
        full = minilm(ids[:1], types[:1]).pooled_output
        assert (minilm.pooled(ids[:1], types[:1]) - full).abs().max().item() < TOL


def test_packed_bf16_autocast_close_to_padded(minilm):
    ids, types, mask = _batch(30522, [32, 9, 20], 32, seed=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        padded = minilm(ids, types, mask, output_all_encoded_layers=False)
        packed = minilm(ids, types, mask, output_all_encoded_layers=False, skip_padding=True)
    valid = mask.bool()
    assert (padded.encoded_layers[valid].float() - packed.encoded_layers[valid].float()).abs().mean() < 2e-2
    assert (padded.pooled_output.float() - packed.pooled_output.float()).abs().max() < 2e-2


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_pooled_path_gradients_match_padded_path(tiny_config):
    torch.manual_seed(0)
    model = bert.BertForSequenceClassification(tiny_config, num_labels=3).eval()  # eval: no dropout
    ids, types, mask = _batch(99, [11, 4, 7], 11, seed=2, left_pad_row=1)
    labels = torch.tensor([2, 0, 1])
    model(ids, types, mask, labels=labels).backward()  # pooled(): packed, [CLS]-only last layer
    fast = _grads(model)
    model.zero_grad()
    _, pooled = model.bert(ids, types, mask, False)  # the padded computation, every token
    F.cross_entropy(model.classifier(pooled), labels).backward()
    plain = _grads(model)
    assert fast.keys() == plain.keys()
    for key in plain:
        assert (fast[key] - plain[key]).norm() <= TOL * max(plain[key].norm(), 1e-3), key


def test_fused_qkv_matches_separate_projections(tiny_config):
    torch.manual_seed(0)
    attention = BertSelfAttention(tiny_config).eval()
    x = torch.randn(2, 9, tiny_config.hidden_size, requires_grad=True)
    key_mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    key_mask[1, ..., 6:] = False
    fused = attention(x, EncoderPlan(key_mask))

    def heads(t):
        return t.view(2, 9, tiny_config.num_attention_heads, -1).transpose(1, 2)

    q, k, v = (heads(layer(x)) for layer in (attention.query, attention.key, attention.value))
    scores = q @ k.transpose(-1, -2) / math.sqrt(tiny_config.head_size)
    probs = scores.masked_fill(~key_mask, float("-inf")).softmax(-1)
    separate = (probs @ v).transpose(1, 2).reshape(2, 9, -1)
    assert (fused - separate).abs().max().item() < TOL
    weight = torch.randn_like(fused)
    grads_fused = torch.autograd.grad((fused * weight).sum(), [x, attention.key.weight, attention.value.bias])
    grads_separate = torch.autograd.grad((separate * weight).sum(), [x, attention.key.weight, attention.value.bias])
    for a, b in zip(grads_fused, grads_separate):
        assert (a - b).abs().max().item() < TOL


def test_explicit_training_attention_matches_sdpa(tiny_config):
    torch.manual_seed(0)
    model = BertModel(tiny_config)
    ids, types, mask = _batch(99, [11, 6], 11, seed=3)
    with torch.no_grad():
        expected = model.eval()(ids, types, mask).encoded_layers  # SDPA
        for module in model.modules():  # train mode (the explicit path) with every dropout at p=0
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        got = model.train()(ids, types, mask).encoded_layers
    valid = mask.bool()
    assert max((a[valid] - b[valid]).abs().max().item() for a, b in zip(expected, got)) < TOL


def test_dropout_mask_rate_values_and_seeding():
    torch.manual_seed(7)
    mask = dropout_mask(torch.Size([1000, 1000]), 0.1, torch.float32)
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / 0.9])
    assert abs((mask == 0).float().mean().item() - 0.1) < 2e-3  # 6.7 sigma at n = 1e6
    # each 16-bit lane of a 64-bit draw is uniform (no lane with a stuck bit)
    assert torch.all(((mask.view(-1, 4) == 0).float().mean(0) - 0.1).abs() < 4e-3)
    torch.manual_seed(7)
    assert torch.equal(dropout_mask(torch.Size([1000, 1000]), 0.1, torch.float32), mask)
    assert not torch.equal(dropout_mask(torch.Size([1000, 1000]), 0.1, torch.float32), mask)
    half = dropout_mask(torch.Size([64, 64]), 0.5, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.unique().tolist() == [0.0, 2.0]
    layer = bert.modeling.Dropout(0.25).train()
    x = torch.ones(200, 500, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through exactly the kept elements, scaled
    assert abs((y == 0).float().mean().item() - 0.25) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dropout_scales_kept_values_exactly_as_torch_dropout(dtype):
    # torch's CPU dropout multiplies by a mask held in the input's dtype (1 / 0.9 is 1.109375 in bf16);
    # ours must round the same way, so every element both keep is bit-identical.
    torch.manual_seed(3)
    x = torch.randn(300, 400).to(dtype)
    ours = bert.modeling.Dropout(0.1).train()(x)
    theirs = torch.nn.functional.dropout(x, 0.1, training=True)
    both = (ours != 0) & (theirs != 0) & (x != 0)
    assert both.sum() > 0.75 * x.numel()
    assert torch.equal(ours[both], theirs[both])


def _full_mlm_loss(model, ids, types, mask, labels):
    with torch.no_grad():
        logits = model(ids, types, mask)
        logits = logits[0] if isinstance(logits, tuple) else logits
    labels = labels.reshape(-1).masked_fill(labels.reshape(-1) == -100, -1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, ignore_index=-1)


@pytest.mark.parametrize("name", ["BertForMaskedLM", "BertForPreTraining"])
def test_masked_lm_loss_on_labelled_positions_matches_full_projection(name, tiny_config):
    torch.manual_seed(0)
    model = getattr(bert, name)(tiny_config).eval()
    ids, types, mask = _batch(99, [11, 5, 8], 11, seed=4)
    labels = torch.full_like(ids, -1)
    labels[0, [2, 7]] = torch.tensor([5, 9])
    labels[2, 3] = 40
    labels[1, 1] = -100
    # BertForPreTraining gives a loss only with both labels (as the original): add the NSP part to the expected.
    nsp = {"next_sentence_label": torch.tensor([0, 1, 1])} if name == "BertForPreTraining" else {}
    for case in ("real tokens only", "a label on padding"):
        if case == "a label on padding":
            labels[1, 9] = 17  # padded position: the padded computation must run to give its loss
        with torch.no_grad():
            loss = model(ids, types, mask, masked_lm_labels=labels, **nsp)
            expected = _full_mlm_loss(model, ids, types, mask, labels)
            if nsp:
                expected += F.cross_entropy(model(ids, types, mask)[1], nsp["next_sentence_label"])
        assert abs(loss.item() - expected.item()) < TOL, case


def test_token_classification_loss_skipping_padding_matches(tiny_config):
    torch.manual_seed(0)
    model = bert.BertForTokenClassification(tiny_config, num_labels=4).eval()
    ids, types, mask = _batch(99, [11, 3, 9], 11, seed=5)
    labels = torch.randint(0, 4, ids.shape)
    with torch.no_grad():
        logits = model(ids, types, mask)
        loss = model(ids, types, mask, labels=labels)
    valid = mask.bool()
    assert abs(loss.item() - F.cross_entropy(logits[valid], labels[valid]).item()) < TOL
