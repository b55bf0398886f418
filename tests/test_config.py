import json

import pytest
import torch

from bert import BertConfig


def test_reads_google_bert_config(tmp_path):
    # Google's bert_config.json for BERT-base, uncased, as released.
    google = {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
        "type_vocab_size": 2, "vocab_size": 30522,
    }
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(google))
    config = BertConfig.from_json_file(path)
    assert config.hidden_size == 768 and config.num_hidden_layers == 12
    assert config.layer_norm_eps == 1e-12
    assert config.head_size == 64


def test_reads_hf_config_with_extra_keys(minilm_dir):
    config = BertConfig.from_json_file(minilm_dir / "config.json")
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (384, 6, 30522)


def test_json_round_trip(tmp_path):
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, hidden_act="gelu_new")
    config.to_json_file(tmp_path / "c.json")
    assert BertConfig.from_json_file(tmp_path / "c.json") == config
    assert BertConfig.from_dict(json.loads(config.to_json_string())) == config
    assert config.to_dict()["hidden_act"] == "gelu_new"
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish"])
def test_known_activations(act):
    assert BertConfig(hidden_act=act).hidden_act == act


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_act", "tanhh", "hidden_act"),
        ("vocab_size", 0, "vocab_size"),
        ("num_hidden_layers", -1, "num_hidden_layers"),
        ("intermediate_size", 2.5, "intermediate_size"),
        ("hidden_dropout_prob", 1.5, "hidden_dropout_prob"),
        ("layer_norm_eps", 0, "layer_norm_eps"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**{field: value})


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 768,')
    with pytest.raises(ValueError, match="config.json"):
        BertConfig.from_json_file(path)
    path.write_text('{"hidden_size": 768, "num_attention_heads": 0}')
    with pytest.raises(ValueError, match="config.json.*num_attention_heads"):
        BertConfig.from_json_file(path)


def test_sizes_that_do_not_fit_are_refused_when_a_model_is_built(tmp_path):
    """As the original: BertConfig(99, hidden_size=37) is a config (12 heads do not divide 37), no model is."""
    from bert import BertModel

    config = BertConfig(99, hidden_size=37)
    assert config.hidden_size == 37 and config.num_attention_heads == 12
    with pytest.raises(ValueError, match=r"hidden size \(37\) is not a multiple of the number of attention heads \(12\)"):
        BertModel(config)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**BertConfig(99, hidden_size=32, num_hidden_layers=1,
                                                                 num_attention_heads=4, intermediate_size=8).to_dict(),
                                                    "hidden_size": 30}))
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"config.json: The hidden size \(30\) is not a multiple.*\(4\)"):
        BertModel.from_pretrained(folder)
