"""Damaged and hostile checkpoints: truncated, foreign, wrong shapes or dtypes, and pickles that carry code.

Loading never runs pickled code (torch.load(weights_only=True), safetensors by default): each hostile
pickle would create a marker file, and the marker must never appear. Every bad checkpoint is one clear
line naming the file (and the parameter where there is one), through the library, ``bert`` and the
convert / finetune / evaluate stages, with nothing written.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import struct
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from bert.model.weights import load_state_dict_file
from reliability_helpers import (BAD_INPUT, REPO, assert_one_clear_error, assert_stage_failed, finetune_args,
                                 finetune_inputs, make_tiny_model, run_python, snapshot, tally)


class Payload:
    """Pickles as a call of `func(*args)`: what a hostile pytorch_model.bin carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker) -> dict:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.exec": Payload(builtins.exec, touch),
        "builtins.eval": Payload(builtins.eval, touch),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
        "builtins.open": Payload(builtins.open, str(marker), "w"),
    }


def _write_pickle(path, obj, how: str) -> None:
    if how == "torch zip":
        torch.save(obj, path)
    elif how == "torch legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle, protocol 2 (what the first pytorch-pretrained-bert dumps look like)
        path.write_bytes(pickle.dumps(obj, protocol=2))


HOSTILE = [(name, how, nested) for name in ("os.system", "builtins.exec", "builtins.eval", "subprocess.Popen",
                                            "builtins.open")
           for how, nested in (("torch zip", False), ("torch legacy", False), ("plain pickle", True))]


@pytest.mark.parametrize("name, how, nested", HOSTILE, ids=[f"{n}-{h}" for n, h, _ in HOSTILE])
def test_pickled_code_never_runs(tmp_path, name, how, nested):
    with tally(BAD_INPUT, f"pytorch_model.bin calling {name} ({how}{', inside a real state dict' if nested else ''})"):
        marker = tmp_path / "PWNED"
        payload = _payloads(marker)[name]
        obj = {"embeddings.word_embeddings.weight": torch.zeros(3, 2), "x": payload} if nested else {"x": payload}
        _write_pickle(tmp_path / "pytorch_model.bin", obj, how)
        with pytest.raises(ValueError) as info:
            load_state_dict_file(tmp_path / "pytorch_model.bin")
        message = str(info.value)
        assert "\n" not in message and "pytorch_model.bin" in message and "refused" in message, message
        assert not marker.exists(), "pickled code ran"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_dir):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", minilm_dir / "vocab.txt")


def _hostile_model(folder, tiny_model, marker):
    folder.mkdir()
    shutil.copyfile(tiny_model / "config.json", folder / "config.json")
    shutil.copyfile(tiny_model / "vocab.txt", folder / "vocab.txt")
    state = dict(load_file(str(tiny_model / "model.safetensors")))
    torch.save({**state, "pooler.dense.weight": Payload(os.system, f"touch {marker}")}, folder / "pytorch_model.bin")
    return folder


def test_hostile_pickle_through_the_commands(tmp_path, tiny_model, caplog, capsys):
    """bert extract-features, bert export-tf-checkpoint and stages.convert all refuse it, in one line."""
    from bert.cli.commands import main
    from stages import convert

    with tally(BAD_INPUT, "hostile pytorch_model.bin through bert extract-features / export / stages.convert"):
        marker = tmp_path / "PWNED"
        model = _hostile_model(tmp_path / "model", tiny_model, marker)
        (tmp_path / "in.txt").write_text("hello\n")
        rc = main(["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"),
                   "--output-file", str(tmp_path / "o.jsonl"), "--model", str(model)])
        assert_one_clear_error(rc, capsys.readouterr().err, str(model / "pytorch_model.bin"), "posix.system")
        rc = main(["export-tf-checkpoint", str(model), str(tmp_path / "tf" / "bert_model.ckpt")])
        assert_one_clear_error(rc, capsys.readouterr().err, "pytorch_model.bin", "refused")
        (tmp_path / "params.yaml").write_text(_params_naming(model))
        rc = convert.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "converted")])
        assert_stage_failed(rc, caplog, "pytorch_model.bin", "refused")
        assert not marker.exists() and not (tmp_path / "o.jsonl").exists() and not (tmp_path / "converted").exists()
        assert not (tmp_path / "tf").exists() or snapshot(tmp_path / "tf") == {}


def _params_naming(model) -> str:
    text = (REPO / "params.yaml").read_text()
    return text.replace("name: minilm-l6-h384-uncased", f"name: {model}", 1)


def test_hostile_pickle_command_line(tmp_path, tiny_model):
    """The real ``python -m stages.convert``: exit 1, one line, no traceback, the code never ran."""
    with tally(BAD_INPUT, "python -m stages.convert: hostile pytorch_model.bin"):
        marker = tmp_path / "PWNED"
        model = _hostile_model(tmp_path / "model", tiny_model, marker)
        (tmp_path / "params.yaml").write_text(_params_naming(model))
        proc = run_python(["-m", "stages.convert", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "converted")])
        assert_one_clear_error(proc.returncode, proc.stderr, "pytorch_model.bin", "posix.system")
        assert not marker.exists() and not (tmp_path / "converted").exists()


# ----------------------------------------------------------------------------------------------
# Damaged safetensors files and configs that do not fit their weights.


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _with_header(data: bytes, edit) -> bytes:
    n = _header_length(data)
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _first_tensor(header) -> dict:
    return header[sorted(k for k in header if k != "__metadata__")[0]]


DAMAGED = {  # case -> (bytes of model.safetensors from the good ones, fragments of the error)
    "empty": (lambda d: b"", ["not a readable weights file"]),
    "cut in the length": (lambda d: d[:5], ["not a readable weights file"]),
    "cut in the header": (lambda d: d[:8 + _header_length(d) // 2], ["not a readable weights file"]),
    "cut in the data": (lambda d: d[:len(d) - 1000], ["not a readable weights file"]),
    "header length of 2**62": (lambda d: struct.pack("<Q", 2**62) + d[8:], ["not a readable weights file"]),
    "offsets past the end": (lambda d: _with_header(d, lambda h: _first_tensor(h).update(
        data_offsets=[0, 10**12])), ["not a readable weights file"]),
    "unknown dtype": (lambda d: _with_header(d, lambda h: _first_tensor(h).update(dtype="F128")),
                      ["not a readable weights file"]),
    "random bytes": (lambda d: bytes(range(256)) * 64, ["not a readable weights file"]),
    "an HTML error page": (lambda d: b"<html><body>403 Forbidden</body></html>", ["not a readable weights file"]),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_safetensors(tmp_path, tiny_model, capsys, case):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"model.safetensors {case}"):
        model = shutil.copytree(tiny_model, tmp_path / "model")
        edit, fragments = DAMAGED[case]
        (model / "model.safetensors").write_bytes(edit((tiny_model / "model.safetensors").read_bytes()))
        (tmp_path / "in.txt").write_text("hello\n")
        rc = main(["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"),
                   "--output-file", str(tmp_path / "o.jsonl"), "--model", str(model)])
        assert_one_clear_error(rc, capsys.readouterr().err, str(model / "model.safetensors"), *fragments)
        assert not (tmp_path / "o.jsonl").exists()


def _retyped(key: str, convert):
    def edit(state):
        state[key] = convert(state[key])
    return edit


WRONG = {  # case -> (edit of the state dict or None, edit of config.json or None, fragments)
    "int64 embeddings": (_retyped("embeddings.word_embeddings.weight", lambda t: t.to(torch.int64)), None,
                         ["embeddings.word_embeddings.weight is torch.int64", "expected floating point"]),
    "bool LayerNorm": (_retyped("embeddings.LayerNorm.weight", lambda t: t.bool()), None,
                       ["embeddings.LayerNorm.weight is torch.bool"]),
    "NaN in a layer": (_retyped("encoder.layer.1.output.dense.weight", lambda t: t.fill_(float("nan"))), None,
                       ["encoder.layer.1.output.dense.weight holds NaN or infinite values"]),
    "inf in the pooler": (_retyped("pooler.dense.bias", lambda t: t.fill_(float("inf"))), None,
                          ["pooler.dense.bias holds NaN or infinite values"]),
    "transposed kernel": (_retyped("encoder.layer.0.output.dense.weight", lambda t: t.t().contiguous()), None,
                          ["encoder.layer.0.output.dense.weight has shape (37, 32)", "expected (32, 37)"]),
    "missing layer": (lambda s: [s.pop(k) for k in list(s) if k.startswith("encoder.layer.1.")], None,
                      ["num_hidden_layers is 2", "has 1 layers"]),
    "config: hidden 64": (None, {"hidden_size": 64}, ["hidden_size is 64", "(30522, 32)"]),
    "config: vocab of 10**12": (None, {"vocab_size": 10**12}, ["vocab_size is 1000000000000"]),
    "config: 10**6 layers": (None, {"num_hidden_layers": 10**6}, ["num_hidden_layers is 1000000", "has 2 layers"]),
    "config: layer_norm_eps NaN": (None, {"layer_norm_eps": float("nan")}, ["layer_norm_eps", "finite"]),
    "config: dropout 1.5": (None, {"hidden_dropout_prob": 1.5}, ["hidden_dropout_prob", "probability"]),
    "config: heads not dividing": (None, {"num_attention_heads": 5}, ["The hidden size (32) is not a multiple of the number of attention heads (5)"]),
    "config: text for a size": (None, {"intermediate_size": "37"}, ["intermediate_size", "positive integer"]),
    "config: a list": (None, [1, 2], ["config.json", "expected a JSON object"]),
    "config: num_labels -1": (None, {"num_labels": -1}, ["num_labels must be a positive integer"]),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_shapes_dtypes_and_configs(tmp_path, tiny_model, case):
    """Through from_pretrained (what every command uses): one line naming the file and the parameter."""
    from bert import BertForSequenceClassification

    with tally(BAD_INPUT, f"checkpoint with {case}"):
        model = shutil.copytree(tiny_model, tmp_path / "model")
        edit_state, edit_config, fragments = WRONG[case]
        if edit_state:
            state = dict(load_file(str(model / "model.safetensors")))
            edit_state(state)
            save_file(state, str(model / "model.safetensors"))
        if edit_config is not None:
            config = json.loads((model / "config.json").read_text())
            config = {**config, **edit_config} if isinstance(edit_config, dict) else edit_config
            (model / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError) as info:
            BertForSequenceClassification.from_pretrained(model, num_labels=2).eval() if "num_labels" not in case \
                else BertForSequenceClassification.from_pretrained(model).eval()
        message = str(info.value)
        assert "\n" not in message and str(model) in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


# ----------------------------------------------------------------------------------------------
# Google TF checkpoints (TensorFlow needed).


@pytest.fixture(scope="module")
def tf_checkpoint(tmp_path_factory, tiny_model):
    pytest.importorskip("tensorflow")
    from bert.formats.convert import export_tf_checkpoint

    return export_tf_checkpoint(tiny_model, tmp_path_factory.mktemp("tf") / "bert_model.ckpt")


def _damage_tf(folder, case):
    data = next(folder.glob("bert_model.ckpt.data-*"))
    index = folder / "bert_model.ckpt.index"
    if case == "data file cut in half":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif case == "index of random bytes":
        index.write_bytes(bytes(range(256)) * 8)
    elif case == "data file missing":
        data.unlink()
    elif case == "config with another hidden size":
        config = json.loads((folder / "bert_config.json").read_text())
        (folder / "bert_config.json").write_text(json.dumps({**config, "hidden_size": 64, "num_attention_heads": 4}))


TF_CASES = {
    "data file cut in half": ["not a readable TF checkpoint"],
    "index of random bytes": ["not a readable TF checkpoint"],
    "data file missing": ["not a readable TF checkpoint"],
    "config with another hidden size": ["shape mismatch", "bert/embeddings/word_embeddings [30522, 32]"],
}


@pytest.mark.parametrize("case", sorted(TF_CASES))
def test_damaged_tf_checkpoint(tmp_path, tf_checkpoint, capsys, case):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"TF checkpoint: {case}"):
        folder = shutil.copytree(tf_checkpoint.parent, tmp_path / "google")
        _damage_tf(folder, case)
        rc = main(["convert-tf-checkpoint", str(folder / "bert_model.ckpt"), str(tmp_path / "out")])
        assert_one_clear_error(rc, capsys.readouterr().err, *TF_CASES[case])
        assert not (tmp_path / "out").exists() or snapshot(tmp_path / "out") == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_tf_checkpoint_with_non_finite_weights(tmp_path, tiny_model, capsys, value):
    """[#19 L8] Written by our own writer (no TensorFlow needed): a checkpoint whose training diverged."""
    import numpy as np

    from bert import BertForPreTraining
    from bert.cli.commands import main
    from bert.formats.convert import export_tf_checkpoint
    from bert.formats.tf_checkpoint import read_tf_checkpoint, write_tf_checkpoint

    with tally(BAD_INPUT, f"TF checkpoint with a {value} weight: bert convert-tf-checkpoint and from_tf"):
        prefix = export_tf_checkpoint(tiny_model, tmp_path / "google" / "bert_model.ckpt")
        variables = read_tf_checkpoint(prefix)
        name = "bert/encoder/layer_1/attention/self/query/kernel"
        variables[name] = variables[name].copy()
        variables[name][3, 5] = value
        write_tf_checkpoint({k: np.asarray(v) for k, v in variables.items()}, prefix)
        rc = main(["convert-tf-checkpoint", str(prefix), str(tmp_path / "out")])
        assert_one_clear_error(rc, capsys.readouterr().err, name, "NaN or infinite", str(prefix))
        assert not (tmp_path / "out").exists() or snapshot(tmp_path / "out") == {}
        shutil.copyfile(tiny_model / "config.json", tmp_path / "google" / "config.json")
        with pytest.raises(ValueError, match=f"{name} holds NaN or infinite values"):
            BertForPreTraining.from_pretrained(tmp_path / "google", from_tf=True)


# ----------------------------------------------------------------------------------------------
# What the stages read back: training checkpoints and the feature cache.


@pytest.fixture(scope="module")
def trained_inputs(tmp_path_factory, minilm_dir):
    return finetune_inputs(tmp_path_factory.mktemp("ft"), minilm_dir / "vocab.txt")


def _seed_checkpoint(work, payload_or_bytes, paths):
    """A --work folder holding a 'checkpoint' that the resume logic will read."""
    from stages import finetune
    from stages._lib import training
    from stages._lib.params import load_section
    from stages.finetune import Finetune, FinetuneParams

    (work / "checkpoints").mkdir(parents=True)
    path = work / "checkpoints" / "step-00000002.pt"
    if isinstance(payload_or_bytes, bytes):
        path.write_bytes(payload_or_bytes)
    else:
        torch.save(payload_or_bytes, path)
    # The fingerprint finetune writes for this exact run, so that the folder is kept and resumed from.
    stage = Finetune(finetune.__doc__)
    args = stage.parser().parse_args(finetune_args(paths, work.parent / "out" / "model", work))
    cfg = load_section("finetune", FinetuneParams, paths["params"]).train_config(seed=1)
    (work / training.FINGERPRINT).write_text(json.dumps(stage.fingerprint(args, cfg)))
    return path


@pytest.mark.parametrize("case", ["hostile pickle", "truncated"])
def test_resume_from_a_bad_training_checkpoint(tmp_path, trained_inputs, caplog, case):
    """The finetune stage refuses it, the code never runs, nothing is written (the one-line part: below)."""
    from stages import finetune

    with tally(BAD_INPUT, f"finetune resume from a {case} training checkpoint"):
        marker = tmp_path / "PWNED"
        content = {"format": 1, "global_step": Payload(os.system, f"touch {marker}")} if case == "hostile pickle" \
            else b"PK\x03\x04" + bytes(100)
        _seed_checkpoint(tmp_path / "work", content, trained_inputs)
        rc = finetune.main(finetune_args(trained_inputs, tmp_path / "out" / "model", tmp_path / "work"))
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert rc == 1 and len(errors) == 1 and "step-00000002.pt" in errors[0], errors
        assert not marker.exists() and not (tmp_path / "out").exists()


def test_bad_training_checkpoint_error_is_one_line(tmp_path, trained_inputs, caplog):
    from stages import finetune

    with tally(BAD_INPUT, "finetune resume from a hostile checkpoint: one line"):
        _seed_checkpoint(tmp_path / "work", {"format": 1, "global_step": Payload(print, "ran")}, trained_inputs)
        rc = finetune.main(finetune_args(trained_inputs, tmp_path / "out" / "model", tmp_path / "work"))
        assert_stage_failed(rc, caplog, "step-00000002.pt")


@pytest.mark.parametrize("case, file, content, fragments", [
    ("truncated tensors", "train/features.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", ["not a readable feature file"]),
    ("manifest not JSON", "train/manifest.json", b"{\"task\": ", ["manifest.json", "not valid JSON"]),
    ("manifest of another format", "train/manifest.json", b"{\"format_version\": 99}", ["format_version 2, found 99"]),
    ("no manifest", "train/manifest.json", None, ["not a feature cache"]),
])
def test_damaged_feature_cache(tmp_path, trained_inputs, caplog, case, file, content, fragments):
    from stages import finetune

    with tally(BAD_INPUT, f"feature cache: {case}"):
        features = shutil.copytree(trained_inputs["features"], tmp_path / "features")
        if content is None:
            (features / file).unlink()
        else:
            (features / file).write_bytes(content)
        args = finetune_args({**trained_inputs, "features": features}, tmp_path / "out" / "model", tmp_path / "work")
        rc = finetune.main(args)
        assert_stage_failed(rc, caplog, *fragments)
        assert not (tmp_path / "out").exists()


def test_vocab_larger_than_the_model(tmp_path, trained_inputs, caplog):
    from stages import finetune

    with tally(BAD_INPUT, "finetune: features from a 30522-token vocab, model with vocab_size 1000"):
        small = make_tiny_model(tmp_path / "model", trained_inputs["model"] / "vocab.txt", vocab_size=1000)
        args = finetune_args({**trained_inputs, "model": small}, tmp_path / "out" / "model", tmp_path / "work")
        rc = finetune.main(args)
        assert_stage_failed(rc, caplog, "outside the vocabulary [0, 1000)")
        assert not (tmp_path / "out").exists()
