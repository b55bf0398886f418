"""The `bert` command: help, conversions both ways, extract-features, download, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bert import BertModel
from bert.cli.commands import main
from bert.tokenization import BertTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_help_for_every_subcommand(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    commands = ["convert-tf-checkpoint", "export-tf-checkpoint", "extract-features", "predict", "download"]
    assert all(c in text for c in commands)
    for command in commands:
        assert main([command, "--help"]) == 0
        assert f"bert {command}" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_python_dash_m_bert_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "bert", "download", "--list"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("minilm-l6-h384-uncased\tpackaged (")
    assert "bert-base-uncased\thttps://storage.googleapis.com/bert_models/2018_10_18/uncased_L-12_H-768_A-12.zip" \
        in lines
    assert len(lines) == 1 + 31 + 4  # packaged, 7 seed names + 24 small BERTs, 4 aliases


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BERT_DEBUG", raising=False)
    assert main(["convert-tf-checkpoint", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("bert convert-tf-checkpoint: error: ") and "missing.ckpt" in err
    with pytest.raises(ValueError, match="missing.ckpt"):
        main(["--debug", "convert-tf-checkpoint", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")])
    monkeypatch.setenv("BERT_DEBUG", "1")
    with pytest.raises(ValueError, match="missing.ckpt"):
        main(["convert-tf-checkpoint", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")])


def test_export_and_convert_need_no_tensorflow(tmp_path, monkeypatch, minilm_dir):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails as if absent
    prefix = tmp_path / "out" / "bert_model.ckpt"
    assert main(["-q", "export-tf-checkpoint", str(minilm_dir), str(prefix)]) == 0
    assert main(["-q", "convert-tf-checkpoint", str(prefix.parent), str(tmp_path / "back")]) == 0
    assert_same_as_packaged(tmp_path / "back", minilm_dir)


@pytest.fixture(scope="module")
def minilm_release(tmp_path_factory):
    """`bert export-tf-checkpoint` of the packaged model, zipped in Google's released layout."""
    pytest.importorskip("tensorflow")
    tmp_path = tmp_path_factory.mktemp("release")
    release = tmp_path / "uncased_L-6_H-384_A-12"
    assert main(["-q", "export-tf-checkpoint", "minilm-l6-h384-uncased", str(release / "bert_model.ckpt")]) == 0
    assert sorted(p.name for p in release.iterdir()) == [
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index", "vocab.txt"]
    archive = tmp_path / "uncased_L-6_H-384_A-12.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # stored, not deflated: the test is about layout, not size
        for path in sorted(release.iterdir()):
            zf.write(path, f"{release.name}/{path.name}")
    return release, archive


def assert_same_as_packaged(folder: Path, minilm_dir: Path) -> None:
    packaged = load_file(str(minilm_dir / "model.safetensors"))
    converted = load_file(str(folder / "model.safetensors"))
    assert sorted(converted) == sorted(k for k in packaged if "position_ids" not in k)
    assert all(torch.equal(converted[k], packaged[k]) for k in converted)
    assert (folder / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()


@pytest.mark.xdist_group("tensorflow")
def test_export_then_convert_zip_round_trip(minilm_release, tmp_path, capsys, minilm_dir):
    release, archive = minilm_release
    capsys.readouterr()
    assert main(["-q", "convert-tf-checkpoint", str(archive), str(tmp_path / "from_zip")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "from_zip")
    assert main(["-q", "convert-tf-checkpoint", str(release / "bert_model.ckpt"), str(release / "bert_config.json"),
                 str(tmp_path / "from_prefix")]) == 0
    for out in ("from_zip", "from_prefix"):
        assert_same_as_packaged(tmp_path / out, minilm_dir)
    # A head the checkpoint cannot fill: the one-line list of what is missing.
    assert main(["-q", "convert-tf-checkpoint", str(release), str(tmp_path / "squad"), "--head", "squad"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qa_outputs.weight [2, 384] (from cls/squad/output_weights)" in err


@pytest.mark.xdist_group("tensorflow")
def test_download_command_with_a_file_mirror(minilm_release, tmp_path, capsys, monkeypatch, minilm_dir):
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("BERT_TOOLKIT_MIRROR", mirror.as_uri())
    cache = tmp_path / "cache"
    assert main(["-q", "download", "bert-tiny", "--cache-dir", str(cache)]) == 1  # nothing there yet
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2020_02_20/uncased_L-2_H-128_A-2.zip" in err and "save it as" in err
    (mirror / "2020_02_20").mkdir(parents=True)
    shutil.copy(minilm_release[1], mirror / "2020_02_20" / "uncased_L-2_H-128_A-2.zip")
    assert main(["-q", "download", "bert-tiny", "--cache-dir", str(cache)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == cache / "models" / "google--bert_uncased_L-2_H-128_A-2"
    assert_same_as_packaged(folder, minilm_dir)
    assert main(["-q", "download"]) == 1


def test_extract_features_matches_the_model(tmp_path, minilm_dir):
    lines = ["Hello world, this is BERT.", "Who was Jim Henson ? ||| Jim Henson was a puppeteer", "",
             "A much longer sentence that has quite a few more word pieces than the others do."]
    (tmp_path / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "features.jsonl"
    assert main(["-q", "extract-features", "--input-file", str(tmp_path / "input.txt"), "--output-file", str(out),
                 "--model", str(minilm_dir), "--layers=-1,-2", "--batch-size", "3",
                 "--max-seq-length", "16", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["linex_index"] for r in records] == [0, 1, 2, 3]

    model = BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    pair = tokenizer.tokenize("Who was Jim Henson ?"), tokenizer.tokenize("Jim Henson was a puppeteer")
    expected_tokens = [
        ["[CLS]", *tokenizer.tokenize(lines[0]), "[SEP]"],
        ["[CLS]", *pair[0], "[SEP]", *pair[1], "[SEP]"],
        ["[CLS]", "[SEP]"],
        ["[CLS]", *tokenizer.tokenize(lines[3])[:14], "[SEP]"],  # cut to --max-seq-length 16
    ]
    for record, tokens in zip(records, expected_tokens):
        assert [f["token"] for f in record["features"]] == tokens
        ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
        types = torch.tensor([[0] * (tokens.index("[SEP]") + 1) + [1] * (len(tokens) - tokens.index("[SEP]") - 1)])
        with torch.no_grad():  # each line alone, unpadded: padding in the batch must change nothing
            layers, _ = model(ids, types)
        for index, layer in ((-1, layers[-1][0]), (-2, layers[-2][0])):
            got = torch.tensor([[next(l["values"] for l in f["layers"] if l["index"] == index)
                                 for f in record["features"]]])
            assert (got[0] - layer).abs().max().item() < 1e-5  # rounded to 6 decimals, batched with padding


def test_extract_features_rejects_a_layer_the_model_lacks(tmp_path, capsys, minilm_dir):
    (tmp_path / "input.txt").write_text("hello\n", encoding="utf-8")
    assert main(["-q", "extract-features", "--input-file", str(tmp_path / "input.txt"), "--output-file",
                 str(tmp_path / "out.jsonl"), "--model", str(minilm_dir), "--layers=-1,6"]) == 1
    assert "--layers '-1,6': each must be in [-6, 5] for this model" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
