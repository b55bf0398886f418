"""Weights I/O: our folders, HF folders, sentence-transformers layout, original dumps, bad checkpoints."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import bert
from bert import BertModel
from bert.model.weights import load_state_dict_file

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1000, 30000, (2, 16), generator=g)
    mask = torch.ones_like(input_ids)
    mask[1, 9:] = 0
    return input_ids, torch.zeros_like(input_ids), mask


def _outputs(model, ids):
    with torch.no_grad():
        layers, pooled = model(*ids)
    return layers[-1] if isinstance(layers, list) else layers, pooled


def test_round_trip_identical(minilm_dir, tmp_path, ids):
    model = BertModel.from_pretrained(minilm_dir).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    again = BertModel.from_pretrained(tmp_path).eval()
    for a, b in zip(_outputs(model, ids), _outputs(again, ids)):
        assert torch.equal(a, b)


def test_saved_folder_loads_in_hf_with_same_outputs(minilm_dir, tmp_path, ids):
    model = BertModel.from_pretrained(minilm_dir).eval()
    model.save_pretrained(tmp_path)
    hf, info = transformers.BertModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        ref = hf.eval()(input_ids=ids[0], token_type_ids=ids[1], attention_mask=ids[2])
    last, pooled = _outputs(model, ids)
    valid = ids[2].bool()
    assert (last[valid] - ref.last_hidden_state[valid]).abs().max().item() < 1e-5
    assert (pooled - ref.pooler_output).abs().max().item() < 1e-5


def test_head_round_trip_keeps_num_labels(minilm_dir, tmp_path, ids):
    torch.manual_seed(0)
    model = bert.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=3).eval()
    assert model.load_report.newly_initialized == ["classifier.bias", "classifier.weight"]
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["num_labels"] == 3
    again = bert.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert again.num_labels == 3 and not again.load_report.missing
    with torch.no_grad():
        assert torch.equal(model(*ids), again(*ids))
    # the encoder of a fine-tuned head loads into a bare BertModel (drops `bert.`)
    base = BertModel.from_pretrained(tmp_path).eval()
    assert "classifier.weight" in base.load_report.unexpected


def test_hf_style_pytorch_model_bin_with_gamma_beta(minilm_dir, tmp_path, ids):
    """The original pytorch-pretrained-bert dump: `bert.` prefix, LayerNorm gamma/beta, a .bin file."""
    state = load_file(str(minilm_dir / "model.safetensors"))
    old_names = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old_names["bert." + key] = value
    torch.save(old_names, tmp_path / "pytorch_model.bin")
    (tmp_path / "bert_config.json").write_text((minilm_dir / "config.json").read_text())
    model = BertModel.from_pretrained(tmp_path).eval()
    reference = BertModel.from_pretrained(minilm_dir).eval()
    for a, b in zip(_outputs(model, ids), _outputs(reference, ids)):
        assert torch.equal(a, b)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "pytorch_model.bin"
    with open(path, "wb") as handle:
        pickle.dump({"x": _Evil()}, handle)
    with pytest.raises(ValueError, match="pytorch_model.bin: not a readable weights file"):
        load_state_dict_file(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_truncated_safetensors_is_a_clear_error(minilm_dir, tmp_path):
    data = (minilm_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 3])
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="model.safetensors: not a readable weights file"):
        BertModel.from_pretrained(tmp_path).eval()


def test_shape_mismatch_names_parameter_and_both_shapes(minilm_dir, tmp_path):
    config = json.loads((minilm_dir / "config.json").read_text())
    config["intermediate_size"] = 1024
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.bias has shape \(1536,\) in the checkpoint, expected \(1024,\)"):
        BertModel.from_pretrained(tmp_path).eval()


def test_missing_encoder_weight_is_an_error(minilm_dir, tmp_path):
    state = load_file(str(minilm_dir / "model.safetensors"))
    del state["encoder.layer.3.output.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="1 encoder weights missing.*encoder.layer.3.output.dense.weight"):
        BertModel.from_pretrained(tmp_path).eval()


def test_new_head_is_reported_once(minilm_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="bert.model.weights"):
        model = bert.BertForQuestionAnswering.from_pretrained(minilm_dir).eval()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "newly initialised" in messages[0] and "qa_outputs.weight" in messages[0]
    assert model.load_report.missing == ["qa_outputs.bias", "qa_outputs.weight"]


def test_config_overrides_and_missing_files(minilm_dir, tmp_path):
    model = BertModel.from_pretrained(minilm_dir, hidden_dropout_prob=0.0).eval()
    assert model.config.hidden_dropout_prob == 0.0
    with pytest.raises(ValueError, match="no config file"):
        BertModel.from_pretrained(tmp_path).eval()
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="no weights file.*model.safetensors, pytorch_model.bin"):
        BertModel.from_pretrained(tmp_path).eval()
