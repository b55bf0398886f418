"""pytorch-pretrained-bert 0.6.2's interface on our modules: the scenarios of the original's own tests and
the calls its example scripts make, written in our words (tests/test_compat_oracle.py compares the numbers
with the real package).

Tolerances: fp32 outputs within 1e-5; schedule values exact where the formula gives a round number.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tarfile

import pytest
import torch

import bert
from bert import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel
from bert.modeling import BertEmbeddings, BertEncoder, BertLayerNorm, BertSelfAttention
from bert.optimization import (
    SCHEDULES,
    BertAdam,
    ConstantLR,
    OpenAIAdam,
    WarmupConstantSchedule,
    WarmupCosineSchedule,
    WarmupCosineWithHardRestartsSchedule,
    WarmupCosineWithWarmupRestartsSchedule,
    WarmupLinearSchedule,
)
from bert.tokenization import BertTokenizer
from local_http import Server

TOL = 1e-5
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##want", "##ed", "want", "runn", "##ing", ",",
         "low", "##er", "##est"]


# ---------------------------------------------------------------------------------------------- config
def test_config_from_a_size_or_a_file_and_its_json_round_trip(tmp_path):
    config = BertConfig(vocab_size_or_config_json_file=99, hidden_size=37)
    obj = json.loads(config.to_json_string())
    assert obj["vocab_size"] == 99 and obj["hidden_size"] == 37  # the original's test_config_to_json_string
    assert BertConfig(99, hidden_size=37) == config == BertConfig(vocab_size=99, hidden_size=37)
    config.to_json_file(tmp_path / "bert_config.json")
    assert BertConfig(str(tmp_path / "bert_config.json")) == config  # the path as the first argument
    assert BertConfig.from_json_file(tmp_path / "bert_config.json") == config
    assert BertConfig.from_dict(config.to_dict()) == config
    assert "hidden_size" in repr(config)  # the original's repr is the JSON
    with pytest.raises(ValueError, match="vocabulary size .int. or the path"):
        BertConfig(3.5)
    with pytest.raises(TypeError, match="give the vocabulary size once"):
        BertConfig(99, vocab_size=98)


def test_config_keeps_keys_it_does_not_use(tmp_path):
    """As the original (and HF), every key of the file is kept and written back: id2label survives a round trip."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"vocab_size": 99, "hidden_size": 32, "num_attention_heads": 4,
                                "id2label": {"0": "no", "1": "yes"}, "directionality": "bidi", "to_dict": 1}))
    config = BertConfig.from_json_file(path)
    assert config.id2label == {"0": "no", "1": "yes"} and config.directionality == "bidi"
    assert config.to_dict()["id2label"] == {"0": "no", "1": "yes"}
    assert callable(config.to_dict)  # a key that would shadow a method is not config data


def test_a_function_as_hidden_act(tiny_config):
    config = BertConfig.from_dict({**tiny_config.to_dict(), "hidden_act": torch.tanh})
    layer = bert.modeling.BertIntermediate(config)
    x = torch.randn(2, 3, config.hidden_size)
    assert torch.equal(layer(x), torch.tanh(layer.dense(x)))


def test_layer_norm_keeps_berts_epsilon():
    assert BertLayerNorm(8).eps == 1e-12 and BertLayerNorm(8, eps=1e-5).eps == 1e-5


# ---------------------------------------------------------------------------------------------- tokenizer
@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(w + "\n" for w in WORDS), encoding="utf-8")
    return path


def test_full_tokenizer_and_save_vocabulary_to_a_folder_or_a_file(vocab_file, tmp_path):
    tokenizer = BertTokenizer(vocab_file)
    tokens = tokenizer.tokenize("UNwant\u00E9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [5, 6, 7, 11, 9, 10]
    folder = tmp_path / "saved"
    folder.mkdir()
    written = tokenizer.save_vocabulary(str(folder))
    assert written == str(folder / "vocab.txt") and (folder / "vocab.txt").read_text() == vocab_file.read_text()
    assert tokenizer.save_vocabulary(str(tmp_path / "other.txt")) == str(tmp_path / "other.txt")
    reloaded = BertTokenizer.from_pretrained(str(folder))
    assert reloaded.tokenize("UNwant\u00E9d,running") == tokens


def test_positional_arguments_and_do_basic_tokenize(vocab_file):
    # (vocab_file, do_lower_case, max_len, do_basic_tokenize, never_split), the original's order
    tokenizer = BertTokenizer(str(vocab_file), True, 128, False)
    assert tokenizer.max_len == 128 and tokenizer.do_basic_tokenize is False
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwanted,") == ["[UNK]"]  # no punctuation split: "##," is not in the vocab
    kept = BertTokenizer(str(vocab_file), True, None, True, ("[UNK]", "WANT"))
    assert kept.tokenize("WANT want") == ["[UNK]", "want"]  # never_split words stay whole (and unknown)


def test_max_len_rules(vocab_file, tmp_path, caplog):
    assert BertTokenizer(vocab_file).max_len == int(1e12)  # no limit unless given
    # A shortcut name of the original caps at its 512 positions and decides the casing (with a warning).
    cache = tmp_path / "cache"
    folder = cache / "models" / "bert-base-cased"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_text("{}")  # the hub only checks the converted folder is complete
    (folder / "vocab.txt").write_text("".join(w + "\n" for w in WORDS + ["The", "Hello"]))
    with caplog.at_level(logging.WARNING, logger="bert.tokenization"):
        tokenizer = BertTokenizer.from_pretrained("bert-base-cased", cache_dir=str(cache), do_lower_case=True)
    assert tokenizer.max_len == 512 and tokenizer.do_lower_case is False
    assert "cased model but you have not set `do_lower_case` to False" in caplog.text
    assert BertTokenizer.from_pretrained("bert-base-cased", str(cache), max_len=100).max_len == 100


def test_missing_vocabulary_is_an_error_not_none(tmp_path):
    with pytest.raises(ValueError, match="no vocab.txt"):
        BertTokenizer.from_pretrained(str(tmp_path))


# ---------------------------------------------------------------------------------------------- schedules
def test_schedule_names_map_to_the_original_classes():
    assert SCHEDULES == {None: ConstantLR, "none": ConstantLR, "warmup_cosine": WarmupCosineSchedule,
                         "warmup_constant": WarmupConstantSchedule, "warmup_linear": WarmupLinearSchedule}
    assert isinstance(BertAdam([torch.nn.Parameter(torch.zeros(1))], lr=1, warmup=0.1, t_total=10,
                               schedule=None).param_groups[0]["schedule"], ConstantLR)


def test_schedule_values_by_hand():
    linear = WarmupLinearSchedule(warmup=0.1, t_total=100)
    assert [linear.get_lr(s) for s in (0, 5, 10, 55, 100)] == pytest.approx([0, 0.5, 1, 0.5, 0], abs=1e-12)
    constant = WarmupConstantSchedule(warmup=0.2, t_total=10)
    assert [constant.get_lr(s) for s in (0, 1, 2, 9, 30)] == pytest.approx([0, 0.5, 1, 1, 1])
    cosine = WarmupCosineSchedule(warmup=0.1, t_total=100, cycles=0.5)
    assert cosine.get_lr(55) == pytest.approx(0.5) and cosine.get_lr(100) == pytest.approx(0, abs=1e-12)
    assert WarmupCosineSchedule(warmup=0.0, t_total=100, cycles=2).get_lr(25) == pytest.approx(0, abs=1e-12)
    assert ConstantLR().get_lr(10**6) == 1.0
    assert WarmupLinearSchedule(warmup=0.1, t_total=-1).get_lr(5) == 1.0  # no t_total: no schedule


def test_restart_schedules():
    """The original's test: 5 cycles of 200 steps, each warming up over its first 50."""
    warm = WarmupCosineWithWarmupRestartsSchedule(warmup=0.05, t_total=1000.0, cycles=5)
    assert [warm.get_lr(s) for s in (0, 200, 400, 600, 800)] == pytest.approx([0] * 5, abs=1e-9)
    assert [warm.get_lr(s) for s in (50, 250, 450, 650, 850)] == pytest.approx([1] * 5, abs=1e-9)
    hard = WarmupCosineWithHardRestartsSchedule(warmup=0.0, t_total=100, cycles=4)
    assert [hard.get_lr(s) for s in (0, 25, 50, 75)] == pytest.approx([1] * 4)  # each cycle restarts at 1
    assert hard.get_lr(12.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cycles"):
        WarmupCosineWithHardRestartsSchedule(warmup=0.1, t_total=10, cycles=0.5)
    with pytest.raises(ValueError, match="warmup"):
        WarmupCosineWithWarmupRestartsSchedule(warmup=0.3, t_total=10, cycles=4)
    with pytest.raises(ValueError, match="Invalid warmup"):
        WarmupLinearSchedule(warmup=1.0, t_total=10)


def test_t_total_warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="bert.optimization"):
        WarmupLinearSchedule(warmup=0.1, t_total=-1)
        schedule = WarmupLinearSchedule(warmup=0.1, t_total=10)
        for step in (5, 11, 11, 12):
            schedule.get_lr(step)
        schedule.get_lr(13, nowarn=True)
        WarmupConstantSchedule(warmup=0.1, t_total=10).get_lr(20)  # going on at 1 is fine: no warning
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "t_total value of -1 results in schedule not being applied"
    assert sum("Training beyond specified 't_total'" in m for m in messages) == 2  # steps 11 and 12


# ---------------------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("optimizer_class", [BertAdam, OpenAIAdam])
def test_adam_reaches_a_target(optimizer_class):
    """The original's test_adam: no warmup, constant schedule, no clipping."""
    w = torch.tensor([0.1, -0.2, -0.1], requires_grad=True)
    target = torch.tensor([0.4, 0.2, -0.5])
    optimizer = optimizer_class(params=[w], lr=2e-1, weight_decay=0.0, max_grad_norm=-1)
    for _ in range(100):
        torch.nn.functional.mse_loss(w, target).backward()
        optimizer.step()
        w.grad.zero_()
    assert w.tolist() == pytest.approx([0.4, 0.2, -0.5], abs=1e-2)


def test_bert_adam_keeps_a_schedule_object_and_saves_it_as_data(caplog):
    model = torch.nn.Linear(4, 3)
    schedule = WarmupCosineWithHardRestartsSchedule(warmup=0.1, t_total=20, cycles=2)
    with caplog.at_level(logging.WARNING, logger="bert.optimization"):
        optimizer = BertAdam(model.parameters(), lr=0.01, warmup=0.1, t_total=20, schedule=schedule)
    assert optimizer.param_groups[0]["schedule"] is schedule
    assert "ineffective when _LRSchedule object is provided" in caplog.text
    assert optimizer.get_lr() == [0]  # before any step, as the original
    for _ in range(3):
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
    assert optimizer.get_lr()[0] == pytest.approx(0.01 * schedule.get_lr(3))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # the schedule travels as plain data
    restored = BertAdam(torch.nn.Linear(4, 3).parameters(), lr=0.01)
    restored.load_state_dict(state)
    got = restored.param_groups[0]["schedule"]
    assert type(got) is WarmupCosineWithHardRestartsSchedule and vars(got) == vars(schedule)
    assert restored.get_lr() == optimizer.get_lr()


def test_bert_adam_ignores_unknown_arguments_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="bert.optimization"):
        BertAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.1, bias_correction=False)
    assert "ignoring unknown arguments bias_correction" in caplog.text


def test_openai_adam_takes_the_same_schedules():
    m = torch.nn.Linear(50, 50)
    assert isinstance(OpenAIAdam(m.parameters(), lr=1e-3, schedule="none").param_groups[0]["schedule"], ConstantLR)
    assert isinstance(OpenAIAdam(m.parameters(), lr=1e-3, warmup=0.01, t_total=1000).param_groups[0]["schedule"],
                      WarmupLinearSchedule)


# ---------------------------------------------------------------------------------------------- models
def test_blocks_take_the_originals_extended_mask(tiny_config):
    """Called as the original calls them, the blocks take the additive mask (0 / -10000) and return tensors."""
    torch.manual_seed(0)
    model = BertModel(tiny_config).eval()
    ids = torch.randint(5, 99, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    extended = (1.0 - mask[:, None, None, :].float()) * -10000.0  # [batch, 1, 1, seq]
    with torch.no_grad():
        embedded = model.embeddings(ids)  # token types default to 0
        layers = model.encoder(embedded, extended)
        last = model.encoder(embedded, extended, output_all_encoded_layers=False)
        expected, _ = model(ids, None, mask)
        one = model.encoder.layer[0](embedded, extended)
        context = model.encoder.layer[0].attention.self(embedded, extended)
    assert isinstance(layers, list) and len(layers) == tiny_config.num_hidden_layers and len(last) == 1
    assert isinstance(one, torch.Tensor) and context.shape == embedded.shape
    valid = mask.bool()
    for ours, reference in zip(layers, expected):
        assert (ours[valid] - reference[valid]).abs().max().item() < TOL
    assert torch.equal(last[0], layers[-1])
    assert isinstance(model.embeddings, BertEmbeddings) and isinstance(model.encoder, BertEncoder)
    assert model.encoder.layer[0].attention.self.transpose_for_scores(embedded).shape == (2, 4, 7, 8)
    assert isinstance(model.encoder.layer[0].attention.self, BertSelfAttention)


def test_all_zero_mask_rows_attend_everywhere_on_every_path(tiny_config):
    """The original's additive mask shifts every score of an all-masked row alike: the row attends to every
    position, as if its mask were all ones. The same on the SDPA, explicit and packed paths."""
    torch.manual_seed(0)
    model = BertModel(tiny_config).eval()
    ids = torch.randint(5, 99, (3, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        default = model(ids, None, mask)
        explicit = model(ids, None, mask, output_attentions=True)
        packed = model(ids, None, mask, skip_padding=True)
        as_ones = model(ids[1:2], None, torch.ones(1, 6, dtype=torch.long))
    for layer in (0, -1):
        assert (default.encoded_layers[layer] - explicit.encoded_layers[layer]).abs().max().item() < TOL
        assert (default.encoded_layers[layer][1] - as_ones.encoded_layers[layer][0]).abs().max().item() < TOL
    real = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6, [1] * 6], dtype=torch.bool)
    assert (default.encoded_layers[-1][real] - packed.encoded_layers[-1][real]).abs().max().item() < TOL
    assert (default.pooled_output - packed.pooled_output).abs().max().item() < TOL
    assert torch.allclose(explicit.attentions[0][1].sum(-1), torch.ones(4, 6))
    assert (explicit.attentions[0][1] > 0).all()  # every position attended


def test_pretraining_gives_a_loss_only_with_both_labels(tiny_config):
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config).eval()
    ids = torch.randint(5, 99, (2, 5))
    mlm = torch.full_like(ids, -1)
    mlm[0, 2] = 7
    nsp = torch.tensor([0, 1])
    for labels in ({}, {"masked_lm_labels": mlm}, {"next_sentence_label": nsp}):
        scores, relationship = model(ids, **labels)
        assert scores.shape == (2, 5, 99) and relationship.shape == (2, 2)
    loss = model(ids, masked_lm_labels=mlm, next_sentence_label=nsp)
    assert loss.dim() == 0
    with torch.no_grad():
        scores, relationship = model(ids)
        expected = (torch.nn.functional.cross_entropy(scores[0, 2:3], torch.tensor([7]))
                    + torch.nn.functional.cross_entropy(relationship, nsp))
    assert abs(loss.item() - expected.item()) < TOL


def _original_folder(model: torch.nn.Module, folder, config: BertConfig):
    """Write `model` as the original writes a model: bert_config.json + pytorch_model.bin (LayerNorm gamma/beta)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bert_config.json").write_text(config.to_json_string())
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_from_pretrained_positional_inputs_state_dict_and_archives(tiny_config, tmp_path):
    torch.manual_seed(0)
    source = BertForSequenceClassification(tiny_config, 3)
    folder = _original_folder(source, tmp_path / "model", tiny_config)
    model = BertForSequenceClassification.from_pretrained(str(folder), 3)  # num_labels given positionally
    assert model.num_labels == 3 and torch.equal(model.classifier.weight, source.classifier.weight)
    assert BertForSequenceClassification.from_pretrained(folder, num_labels=3, cache_dir=None).num_labels == 3
    other = {k: torch.zeros_like(v) if "classifier" in k else v for k, v in source.state_dict().items()}
    assert not BertForSequenceClassification.from_pretrained(folder, 3, state_dict=other).classifier.weight.any()
    # A .tar.gz of the folder (the original's archives), by path and by URL.
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    by_path = BertForSequenceClassification.from_pretrained(str(archive), num_labels=3)
    assert torch.equal(by_path.classifier.weight, source.classifier.weight)
    server = Server()
    try:
        server.files["/model.tar.gz"] = archive.read_bytes()
        by_url = BertForSequenceClassification.from_pretrained(f"{server.url}/model.tar.gz", num_labels=3,
                                                               cache_dir=str(tmp_path / "cache"))
    finally:
        server.stop()
    assert torch.equal(by_url.bert.pooler.dense.weight, source.bert.pooler.dense.weight)


@pytest.mark.xdist_group("tensorflow")
def test_from_tf_reads_the_folders_checkpoint(tiny_config, tmp_path):
    pytest.importorskip("tensorflow")
    from bert.formats.tf_checkpoint import state_dict_to_tf, write_tf_checkpoint

    torch.manual_seed(0)
    source = BertForPreTraining(tiny_config)
    folder = tmp_path / "tf"
    write_tf_checkpoint(state_dict_to_tf(source.state_dict(), tiny_config.num_hidden_layers), folder / "model.ckpt")
    (folder / "bert_config.json").write_text(tiny_config.to_json_string())
    loaded = BertModel.from_pretrained(str(folder), from_tf=True)  # pre-training heads dropped
    assert torch.equal(loaded.encoder.layer[1].output.dense.weight, source.bert.encoder.layer[1].output.dense.weight)
    classifier = BertForSequenceClassification.from_pretrained(str(folder), from_tf=True, num_labels=4)
    assert classifier.classifier.weight.shape == (4, tiny_config.hidden_size)  # new head, initialised
    assert torch.equal(classifier.bert.pooler.dense.bias, source.bert.pooler.dense.bias)
    model = BertForPreTraining(tiny_config)
    assert bert.load_tf_weights_in_bert(model, str(folder / "model.ckpt")) is model
    assert torch.equal(model.cls.predictions.bias, source.cls.predictions.bias)


def test_model_constructors_refuse_what_is_not_a_config():
    with pytest.raises(ValueError, match=r"should be an instance of class `BertConfig`.*from_pretrained"):
        BertModel({"vocab_size": 99})
    assert math.isclose(BertConfig(99).layer_norm_eps, 1e-12)
