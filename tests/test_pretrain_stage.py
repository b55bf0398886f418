"""The pre-training pipeline: corpus -> instances -> pretrain, its output fine-tuned through the stages.

A tiny BERT (hidden 64, 2 layers) over a vocab of the generated corpus's words is pre-trained on
about 240 KB of generated text; the masked LM loss must fall clearly, and below what word
frequencies alone give (so the model uses the context). The packaged MiniLM, which has no
pre-training heads, is pre-trained for a few steps to show the heads are initialised and said so.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from bert.model.config import BertConfig
from bert.modeling import BertForPreTraining, BertForSequenceClassification
from bert.data.pretraining_data import PretrainingDataset, pretraining_collate
from stages import builtin_corpus, pretrain, pretrain_data
from stages._lib.params import load_section
from stages.builtin_corpus import lexicon

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_params(path: Path, **sections) -> Path:
    """The shipped pretrain/params.yaml with some keys replaced: {section: {key: value}}."""
    params = yaml.safe_load((REPO / "pretrain" / "params.yaml").read_text(encoding="utf-8"))
    for section, values in sections.items():
        for key, value in values.items():
            target = params[section]
            *parents, leaf = key.split(".")
            for p in parents:
                target = target[p]
            target[leaf] = value
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def run_pipeline(root: Path, params: Path, model_dir: Path) -> dict:
    """corpus -> instances -> pretrain through the stages' main(); returns metrics.json."""
    assert builtin_corpus.main(["--params", str(params), "--out", str(root / "corpus")]) == 0
    assert pretrain_data.main(["--params", str(params), "--corpus", str(root / "corpus"), "--model", str(model_dir),
                               "--out", str(root / "instances")]) == 0
    assert pretrain.main(stage_args(root, params, model_dir)) == 0
    return json.loads((root / "metrics.json").read_text(encoding="utf-8"))


def stage_args(root: Path, params: Path, model_dir: Path) -> list[str]:
    return ["--params", str(params), "--model", str(model_dir), "--instances", str(root / "instances"),
            "--out", str(root / "model"), "--metrics", str(root / "metrics.json"),
            "--history", str(root / "history.json"), "--work", str(root / "work")]


@pytest.fixture(scope="module")
def tiny_start(tmp_path_factory) -> Path:
    """A randomly initialised tiny BertForPreTraining folder whose vocab covers the generated corpus."""
    folder = tmp_path_factory.mktemp("start")
    vocab = SPECIALS + lexicon() + ["##s"]  # plurals are word + ##s
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


def pretrain_tiny(root: Path, start: Path) -> dict:
    """The tiny model pre-trained on about 240 KB of generated text: 2 epochs of 32-token pairs."""
    params = write_params(root / "params.yaml",
                          corpus={"builtin.documents": 400, "builtin.seed": 3},
                          instances={"max_seq_length": 32, "dupe_factor": 2, "dev_documents": 20},
                          pretrain={"epochs": 2.0, "learning_rate": 3e-3, "global_batch_size": 32,
                                    "optimizer": "adamw", "warmup_proportion": 0.05, "checkpoint_every": 100,
                                    "log_every": 10})
    return run_pipeline(root, params, start)


def unigram_cross_entropy(train: PretrainingDataset, dev: PretrainingDataset) -> float:
    """Masked LM loss on dev of the best context-free guess: the train labels' frequencies."""
    counts = Counter()
    for i in range(len(train)):
        labels = train[i]["masked_lm_labels"]
        counts.update(labels[labels >= 0].tolist())
    total, loss, n = sum(counts.values()), 0.0, 0
    for i in range(len(dev)):
        labels = dev[i]["masked_lm_labels"]
        for t in labels[labels >= 0].tolist():
            loss -= math.log(max(counts[t], 1) / total)
            n += 1
    return loss / n


# One test, not three sharing a fixture: under pytest-xdist a module fixture would train once per worker.
def test_pretraining_lowers_the_masked_lm_loss_and_the_result_fine_tunes(tmp_path, tiny_start):
    root = tmp_path / "pretrain"
    root.mkdir()
    metrics = pretrain_tiny(root, tiny_start)
    corpus_bytes = (root / "corpus" / "corpus.txt").stat().st_size
    before, after = metrics["before"], metrics["after"]
    unigram = unigram_cross_entropy(PretrainingDataset(root / "instances" / "train"),
                                    PretrainingDataset(root / "instances" / "dev"))
    print(f"\ncorpus {corpus_bytes} bytes, {metrics['train_instances']} train instances, "
          f"{metrics['global_steps']} steps in {metrics['seconds']:.1f} s; dev MLM loss {before['mlm_loss']:.3f} "
          f"-> {after['mlm_loss']:.3f} (unigram {unigram:.3f}), accuracy {before['mlm_accuracy']:.3f} -> "
          f"{after['mlm_accuracy']:.3f}; NSP loss {before['nsp_loss']:.3f} -> {after['nsp_loss']:.3f}, "
          f"accuracy {before['nsp_accuracy']:.3f} -> {after['nsp_accuracy']:.3f}")
    assert 200_000 < corpus_bytes < 400_000
    assert metrics["eval_split"] == "dev" and before["num_predictions"] > 300
    assert before["mlm_loss"] > math.log(len(lexicon())) - 0.5  # untrained: about uniform over the vocab
    assert after["mlm_loss"] < before["mlm_loss"] - 1.0
    assert after["mlm_loss"] < unigram - 0.2  # better than word frequencies: the context is used
    assert after["mlm_accuracy"] > before["mlm_accuracy"] + 0.15
    assert metrics["newly_initialized"] == []  # the tiny start checkpoint has its heads
    history = json.loads((root / "history.json").read_text(encoding="utf-8"))
    assert [p["step"] for p in history][:2] == [10, 20] and history[-1]["step"] == metrics["global_steps"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert not (root / "work" / "checkpoints").exists()  # dropped once the run has finished

    # The stage's evaluation is the model's own loss definition.
    model = BertForPreTraining.from_pretrained(root / "model").eval()
    dev = PretrainingDataset(root / "instances" / "dev")
    batch = pretraining_collate([dev[i] for i in range(16)])
    with torch.no_grad():
        loss = float(model(**batch))
    got = pretrain.evaluate_pretraining(model, torch.utils.data.Subset(dev, range(16)), 16, torch.device("cpu"))
    assert got.mlm_loss + got.nsp_loss == pytest.approx(loss, abs=1e-5)
    # and the saved folder is the trained model: its dev figures are the stage's "after" figures
    full = pretrain.evaluate_pretraining(model, dev, 64, torch.device("cpu"))
    assert full.mlm_loss == pytest.approx(metrics["after"]["mlm_loss"], abs=1e-5)

    # It loads as a fine-tuning start, and goes through the fine-tuning pipeline's stages as model.name.
    from stages import convert, download, finetune, tokenize

    model = BertForSequenceClassification.from_pretrained(root / "model", num_labels=2).eval()
    assert model.load_report.missing == ["classifier.bias", "classifier.weight"]
    trained = BertForPreTraining.from_pretrained(root / "model").state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("bert."):
            assert torch.equal(value, trained[name]), name

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["name"] = str(root / "model")
    params["data"]["builtin"].update(train_examples=64, dev_examples=32)
    params["tokenize"]["max_seq_length"] = 32
    params["finetune"].update(epochs=1.0, global_batch_size=16, checkpoint_every=0)
    main_params = tmp_path / "main_params.yaml"
    main_params.write_text(yaml.safe_dump(params), encoding="utf-8")
    p = ["--params", str(main_params)]
    assert convert.main(p + ["--out", str(tmp_path / "pretrained")]) == 0
    assert download.main(p + ["--task", "demo-pair", "--out", str(tmp_path / "raw")]) == 0
    assert tokenize.main(p + ["--task", "demo-pair", "--data", str(tmp_path / "raw"), "--model",
                              str(tmp_path / "pretrained"), "--out", str(tmp_path / "features")]) == 0
    assert finetune.main(p + ["--task", "demo-pair", "--seed", "1", "--features", str(tmp_path / "features"),
                              "--model", str(tmp_path / "pretrained"), "--out", str(tmp_path / "finetuned"),
                              "--history", str(tmp_path / "history.json"), "--work", str(tmp_path / "work")]) == 0
    assert (tmp_path / "finetuned" / "model.safetensors").is_file()


def test_minilm_gets_new_heads_and_says_so(tmp_path, minilm_dir, caplog):
    params = write_params(tmp_path / "params.yaml", corpus={"builtin.documents": 24},
                          instances={"max_seq_length": 32, "dupe_factor": 1, "dev_documents": 4},
                          pretrain={"global_batch_size": 8, "epochs": 1.0, "checkpoint_every": 0})
    assert builtin_corpus.main(["--params", str(params), "--out", str(tmp_path / "corpus")]) == 0
    assert pretrain_data.main(["--params", str(params), "--corpus", str(tmp_path / "corpus"), "--model",
                               str(minilm_dir), "--out", str(tmp_path / "instances")]) == 0
    steps_per_epoch = math.ceil(len(PretrainingDataset(tmp_path / "instances" / "train")) / 8)
    write_params(params, corpus={"builtin.documents": 24}, instances={"max_seq_length": 32, "dupe_factor": 1,
                 "dev_documents": 4}, pretrain={"global_batch_size": 8, "epochs": 2 / steps_per_epoch,
                                                "checkpoint_every": 0})
    with caplog.at_level(logging.WARNING):
        assert pretrain.main(stage_args(tmp_path, params, minilm_dir)) == 0
    new = ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias",
           "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.dense.bias",
           "cls.predictions.transform.dense.weight", "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["newly_initialized"] == new and metrics["global_steps"] == 2
    assert "no pre-training heads" in caplog.text and "cls.seq_relationship.weight" in caplog.text
    print(f"\nMiniLM, new heads: dev MLM loss {metrics['before']['mlm_loss']:.2f} -> {metrics['mlm_loss']:.2f}")
    # the saved model keeps MiniLM's encoder apart from 2 steps of training, and now has heads
    saved = BertForPreTraining.from_pretrained(tmp_path / "model").eval()
    assert saved.load_report.missing == [] and (tmp_path / "model" / "vocab.txt").is_file()


def test_bad_inputs_fail_naming_what_is_wrong(tmp_path, tiny_start, minilm_dir, caplog):
    params = write_params(tmp_path / "params.yaml", corpus={"builtin.documents": 5},
                          instances={"max_seq_length": 32, "dev_documents": 1})
    assert builtin_corpus.main(["--params", str(params), "--out", str(tmp_path / "corpus")]) == 0
    assert pretrain_data.main(["--params", str(params), "--corpus", str(tmp_path / "corpus"), "--model",
                               str(tiny_start), "--out", str(tmp_path / "instances")]) == 0
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        args = stage_args(out, params, tiny_start)
        args[args.index("--instances") + 1] = str(tmp_path / "nowhere")
        assert pretrain.main(args) == 1
        assert "produced by the pretrain_data stage" in caplog.text
        caplog.clear()
        # instances of the tiny vocab, model MiniLM
        args = stage_args(out, params, minilm_dir)
        args[args.index("--instances") + 1] = str(tmp_path / "instances")
        assert pretrain.main(args) == 1
        assert "another vocabulary" in caplog.text
        caplog.clear()
        bad = tmp_path / "bad.yaml"
        bad.write_text((REPO / "pretrain" / "params.yaml").read_text().replace("learning_rate:", "learning_rat:"))
        assert pretrain.main(stage_args(out, bad, tiny_start)) == 1
        assert "pretrain.learning_rat" in caplog.text
        caplog.clear()
        local = write_params(tmp_path / "local.yaml", corpus={"source": "local", "local_file": str(tmp_path / "x")})
        assert builtin_corpus.main(["--params", str(local), "--out", str(out / "corpus")]) == 1
        assert "corpus.local_file" in caplog.text and "is not a file" in caplog.text
        caplog.clear()
        (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait.\n".encode("latin-1"))
        local = write_params(local, corpus={"source": "local", "local_file": str(tmp_path / "latin1.txt")})
        assert builtin_corpus.main(["--params", str(local), "--out", str(out / "corpus")]) == 1
        assert "not UTF-8 text (byte 3" in caplog.text
    assert not any(out.iterdir())  # nothing half-written


def test_local_corpus_and_shipped_params(tmp_path, tiny_start):
    text = builtin_corpus.generate_corpus(6, seed=1)
    (tmp_path / "mine.txt").write_text(text, encoding="utf-8")
    params = write_params(tmp_path / "params.yaml", corpus={"source": "local", "local_file": str(tmp_path / "mine.txt")},
                          instances={"dev_documents": 0, "max_seq_length": 32})
    assert builtin_corpus.main(["--params", str(params), "--out", str(tmp_path / "corpus")]) == 0
    source = json.loads((tmp_path / "corpus" / "SOURCE.json").read_text())
    assert source["num_documents"] == 6 and (tmp_path / "corpus" / "corpus.txt").read_text() == text
    assert pretrain_data.main(["--params", str(params), "--corpus", str(tmp_path / "corpus"), "--model",
                               str(tiny_start), "--out", str(tmp_path / "instances")]) == 0
    manifest = json.loads((tmp_path / "instances" / "train" / "manifest.json").read_text())
    assert manifest["task"] == "pretrain" and manifest["num_examples"] == 6 and manifest["max_seq_length"] == 32
    assert manifest["extra"]["sequence_label_keys"] == ["masked_lm_labels"]
    assert json.loads((tmp_path / "instances" / "dev" / "manifest.json").read_text())["num_features"] == 0
    write_params(params, corpus={"source": "local", "local_file": str(tmp_path / "mine.txt")},
                 instances={"dev_documents": 0, "max_seq_length": 32}, pretrain={"epochs": 0.1, "checkpoint_every": 0})
    assert pretrain.main(stage_args(tmp_path, params, tiny_start)) == 0
    n = manifest["num_features"]
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_split"] == f"train[:{n}]"
    # every section of the shipped params file is complete and valid
    shipped = REPO / "pretrain" / "params.yaml"
    for section, cls in [("corpus", builtin_corpus.CorpusParams), ("instances", pretrain_data.InstancesParams),
                         ("pretrain", pretrain.PretrainParams)]:
        load_section(section, cls, shipped)


@pytest.mark.slow
def test_dvc_runs_the_pretrain_pipeline(tmp_path, tiny_start):
    """The real `dvc repro pretrain/dvc.yaml` (torchrun included) in a copy of the code, then a no-op repro."""
    import os
    import subprocess
    import sys

    repo = tmp_path / "repo"
    for folder in ("bert", "stages", "pipeline", "bin"):  # bin/python: what the stages' commands start with
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pretrain").mkdir()
    shutil.copyfile(REPO / "pretrain" / "dvc.yaml", repo / "pretrain" / "dvc.yaml")
    write_params(repo / "pretrain" / "params.yaml", model={"name": str(tiny_start)},
                 corpus={"builtin.documents": 30}, instances={"max_seq_length": 32, "dupe_factor": 1, "dev_documents": 4},
                 pretrain={"epochs": 0.2, "global_batch_size": 8, "checkpoint_every": 0})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1", "BERT_TRACKING": "off"}  # MLflow: the tracker's tests

    def dvc(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    dvc("init", "--no-scm", "-q")
    first = dvc("repro", "pretrain/dvc.yaml")
    for stage in ("builtin_corpus", "convert", "pretrain_data", "pretrain"):
        assert f"Running stage 'pretrain/dvc.yaml:{stage}'" in first
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in (repo / "pretrain" / "model").iterdir()}
    assert json.loads((repo / "pretrain" / "reports" / "metrics.json").read_text())["global_steps"] >= 1
    assert "Running stage" not in dvc("repro", "pretrain/dvc.yaml")
    # its resumable checkpoints (--work) are no out: a lost model comes back from DVC's run cache, untrained
    shutil.rmtree(repo / "pretrain" / "model")
    again = dvc("repro", "pretrain/dvc.yaml")
    assert "Stage 'pretrain/dvc.yaml:pretrain' is cached - skipping run" in again and "Running stage" not in again
    assert (repo / "pretrain" / "model" / "model.safetensors").is_file()
