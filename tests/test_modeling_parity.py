"""Parity with HF transformers (a test-only oracle) on the real packaged MiniLM weights.

Tolerances: fp32 outputs within 1e-5 max abs difference; gradients within 1e-4 relative; bf16 autocast
within 2e-2 of fp32.
"""

from __future__ import annotations

import pytest
import torch

import bert
from bert import BertModel

transformers = pytest.importorskip("transformers")

FP32_TOL = 1e-5


@pytest.fixture(scope="module")
def batch():
    """Three sequences, two of them padded, both segments used."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 30000, (3, 24), generator=g)
    input_ids[:, 0] = 101  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 15:] = 0
    attention_mask[2, 6:] = 0
    input_ids[attention_mask == 0] = 0  # [PAD]
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[0, 10:] = 1
    token_type_ids[1, 8:15] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


@pytest.fixture(scope="module")
def models(minilm_dir):
    ours = BertModel.from_pretrained(minilm_dir).eval()
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    return ours, theirs


def _valid(x, mask):
    """Only positions that are real tokens: what padding does elsewhere is nobody's business."""
    return x[mask.bool()]


def test_every_layer_and_pooled_output_match_hf(models, batch):
    ours, theirs = models
    with torch.no_grad():
        layers, pooled = ours(**batch)
        ref = theirs(**batch, output_hidden_states=True)
    assert len(layers) == 6
    worst = 0.0
    for ours_layer, ref_layer in zip(layers, ref.hidden_states[1:]):
        diff = (_valid(ours_layer, batch["attention_mask"]) - _valid(ref_layer, batch["attention_mask"]))
        worst = max(worst, diff.abs().max().item())
    pooled_diff = (pooled - ref.pooler_output).abs().max().item()
    print(f"max abs diff: layers {worst:.2e}, pooled {pooled_diff:.2e}")
    assert worst < FP32_TOL and pooled_diff < FP32_TOL


def test_attention_probabilities_match_hf(minilm_dir, batch):
    ours = BertModel.from_pretrained(minilm_dir).eval()
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = ours(**batch, output_attentions=True)
        ref = theirs(**batch, output_attentions=True)
    assert len(out.attentions) == 6
    for a, b in zip(out.attentions, ref.attentions):
        assert a.shape == (3, 12, 24, 24)
        assert (a - b).abs().max().item() < FP32_TOL
    # The explicit path and the SDPA path give the same hidden states.
    with torch.no_grad():
        plain = ours(**batch)
    assert (plain.encoded_layers[-1] - out.encoded_layers[-1]).abs().max().item() < FP32_TOL


HEADS = [
    # (our class, HF class, constructor kwargs, label builder)
    ("BertForPreTraining", {}, lambda b, g: {
        "masked_lm_labels": _mlm_labels(b, g), "next_sentence_label": torch.tensor([0, 1, 1])}),
    ("BertForMaskedLM", {}, lambda b, g: {"masked_lm_labels": _mlm_labels(b, g)}),
    ("BertForNextSentencePrediction", {}, lambda b, g: {"next_sentence_label": torch.tensor([1, 0, 1])}),
    ("BertForSequenceClassification", {"num_labels": 3}, lambda b, g: {"labels": torch.tensor([2, 0, 1])}),
    ("BertForSequenceClassification", {"num_labels": 1}, lambda b, g: {"labels": torch.tensor([0.5, 3.2, 4.9])}),
    ("BertForTokenClassification", {"num_labels": 5}, lambda b, g: {"labels": _token_labels(b, g)}),
    ("BertForQuestionAnswering", {}, lambda b, g: {
        "start_positions": torch.tensor([3, 40, 2]), "end_positions": torch.tensor([5, 7, 60])}),
    ("BertForMultipleChoice", {}, lambda b, g: {"labels": torch.tensor([1])}),
]


def _mlm_labels(batch, g):
    labels = torch.full_like(batch["input_ids"], -100)
    picks = torch.rand(batch["input_ids"].shape, generator=g) < 0.3
    picks &= batch["attention_mask"].bool()
    labels[picks] = batch["input_ids"][picks]
    return labels


def _token_labels(batch, g):
    # Padding labelled -100: HF scores every labelled token, the original only attention_mask 1 ones.
    labels = torch.randint(0, 5, batch["input_ids"].shape, generator=g)
    return labels.masked_fill(batch["attention_mask"] == 0, -100)


def _hf_kwargs(name, labels):
    """HF's label keyword names differ from the original's for some heads."""
    renamed = dict(labels)
    if "masked_lm_labels" in renamed:
        renamed["labels"] = renamed.pop("masked_lm_labels")
    if name == "BertForNextSentencePrediction":
        renamed["labels"] = renamed.pop("next_sentence_label")
    return renamed


def _head_inputs(name, batch):
    if name != "BertForMultipleChoice":
        return batch
    return {k: v.unsqueeze(0) for k, v in batch.items()}  # one question, three choices


def _logits(output):
    return output if isinstance(output, torch.Tensor) else torch.cat([o.flatten() for o in output])


def _hf_logits(name, output):
    if name == "BertForPreTraining":
        return torch.cat([output.prediction_logits.flatten(), output.seq_relationship_logits.flatten()])
    if name == "BertForQuestionAnswering":
        return torch.cat([output.start_logits.flatten(), output.end_logits.flatten()])
    return output.logits


@pytest.mark.parametrize("name, kwargs, make_labels", HEADS, ids=lambda x: x if isinstance(x, str) else "")
def test_head_logits_loss_and_gradients_match_hf(name, kwargs, make_labels, minilm_dir, batch, tmp_path):
    torch.manual_seed(1234)  # the head's random initialisation
    ours = getattr(bert, name).from_pretrained(minilm_dir, **kwargs).eval()
    # Copy the identical weights across through our saved folder (which also proves HF loads it).
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, name).from_pretrained(str(tmp_path), output_loading_info=True, **kwargs)
    theirs.eval()
    assert not info["missing_keys"] and not info["mismatched_keys"]
    # HF builds these three heads without a pooler (add_pooling_layer=False); ours keeps it, as the original.
    allowed = {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert set(info["unexpected_keys"]) <= allowed

    inputs = _head_inputs(name, batch)
    labels = make_labels(batch, torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours_logits = _logits(ours(**inputs))
        ref_logits = _hf_logits(name, theirs(**inputs))
    # Relative to the logits' scale where it exceeds 1: the MLM head's vocabulary logits reach about 20,
    # where one float32 ulp is 2e-6.
    scale = max(1.0, ref_logits.abs().max().item())
    assert (ours_logits - ref_logits.reshape(ours_logits.shape)).abs().max().item() < FP32_TOL * scale

    ours_loss = ours(**inputs, **labels)
    ref_loss = theirs(**inputs, **_hf_kwargs(name, labels)).loss
    assert abs(ours_loss.item() - ref_loss.item()) < FP32_TOL

    ours_loss.backward()
    ref_loss.backward()
    ref_params = dict(theirs.named_parameters())
    total = sum(p.grad.norm().item() ** 2 for p in theirs.parameters() if p.grad is not None) ** 0.5
    worst = 0.0
    for key, param in ours.named_parameters():
        if param.grad is None:
            continue
        ref_grad = ref_params[key].grad
        if ref_grad.norm().item() < 1e-7 * total:
            # Zero in exact arithmetic (softmax ignores a shift shared by all its inputs: key biases;
            # QA's output bias and last LayerNorm bias): both sides hold rounding noise only.
            assert param.grad.norm().item() < 1e-6 * total, key
            continue
        worst = max(worst, (param.grad - ref_grad).norm().item() / ref_grad.norm().item())
    print(f"{name}{kwargs}: worst relative gradient difference {worst:.2e}")
    assert worst < 1e-4


def test_bf16_autocast_close_to_fp32(models, batch):
    ours, _ = models
    with torch.no_grad():
        fp32_layers, fp32_pooled = ours(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_layers, bf16_pooled = ours(**batch)
    mask = batch["attention_mask"]
    diff = (_valid(bf16_layers[-1].float(), mask) - _valid(fp32_layers[-1], mask)).abs()
    pooled_diff = (bf16_pooled.float() - fp32_pooled).abs().max().item()
    print(f"bf16 vs fp32: last layer max {diff.max().item():.3e} mean {diff.mean().item():.3e}, pooled {pooled_diff:.3e}")
    assert pooled_diff < 2e-2
    assert diff.mean().item() < 2e-2
