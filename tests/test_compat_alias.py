"""``import pytorch_pretrained_bert`` resolves to our package, beside the original without overwriting it.

Each case runs in a fresh interpreter: the alias changes what an import finds, which a test process must
not carry over. The original 0.6.2 is installed in the test environment (a test oracle), so these tests
also show the coexistence rules: the original wins unless the alias is asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

import bert.compat
from bert import BertConfig, BertForSequenceClassification

REPO = Path(__file__).resolve().parents[1]


def python(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "old_code.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_run_resolves_every_submodule_to_ours(tmp_path):
    path = script(tmp_path, """
        import bert, bert.modeling, bert.tokenization, bert.optimization, bert.file_utils
        import pytorch_pretrained_bert
        from pytorch_pretrained_bert import BertAdam, BertModel, BertTokenizer, PYTORCH_PRETRAINED_BERT_CACHE
        from pytorch_pretrained_bert.modeling import BertForSequenceClassification, PRETRAINED_MODEL_ARCHIVE_MAP
        from pytorch_pretrained_bert.tokenization import BertTokenizer as T2, PRETRAINED_VOCAB_ARCHIVE_MAP
        from pytorch_pretrained_bert.optimization import WarmupLinearSchedule
        from pytorch_pretrained_bert.optimization_openai import OpenAIAdam
        from pytorch_pretrained_bert.file_utils import cached_path, WEIGHTS_NAME
        from pytorch_pretrained_bert.convert_tf_checkpoint_to_pytorch import convert_tf_checkpoint_to_pytorch
        import pytorch_pretrained_bert.modeling as m
        assert m is bert.modeling and m.__name__ == "bert.modeling" and m.__spec__.name == "bert.modeling"
        assert BertModel is bert.modeling.BertModel and T2 is BertTokenizer is bert.tokenization.BertTokenizer
        assert WarmupLinearSchedule is bert.optimization.WarmupLinearSchedule
        assert "bert-base-uncased" in PRETRAINED_MODEL_ARCHIVE_MAP and "bert-base-cased" in PRETRAINED_VOCAB_ARCHIVE_MAP
        assert pytorch_pretrained_bert.__file__.startswith(bert.compat.ALIAS_PATH)
        try:
            import pytorch_pretrained_bert.modeling_gpt2
        except ImportError as err:
            print("gpt2:", err)
        print("ok", WEIGHTS_NAME)
    """)
    result = python("-m", "bert.compat", "run", str(path), "--flag")
    assert result.returncode == 0, result.stderr
    assert "ok pytorch_model.bin" in result.stdout
    assert "gpt2: pytorch_pretrained_bert.modeling_gpt2 is not part of bert-toolkit" in result.stdout


def test_the_original_wins_unless_the_alias_is_asked_for(tmp_path):
    """In this environment the original package is installed: plain imports find it, `run` and PYTHONPATH ours."""
    pytest.importorskip("pytorch_pretrained_bert")
    probe = script(tmp_path, "import pytorch_pretrained_bert as p, sys; print(p.__file__); print(sys.argv[1:])")
    plain = python(str(probe))
    assert plain.returncode == 0 and "site-packages" in plain.stdout and "alias_path" not in plain.stdout
    ran = python("-m", "bert.compat", "run", str(probe), "a", "b")
    assert ran.stdout.splitlines() == [str(Path(bert.compat.ALIAS_PATH) / "pytorch_pretrained_bert" / "__init__.py"),
                                      "['a', 'b']"]
    path = python("-m", "bert.compat", "path").stdout.strip()
    assert path == bert.compat.ALIAS_PATH
    assert "alias_path" in python(str(probe), env={"PYTHONPATH": path}).stdout
    # -m, and the children of the run (through PYTHONPATH)
    child = script(tmp_path, """
        import subprocess, sys
        print(subprocess.run([sys.executable, "-c", "import pytorch_pretrained_bert as p; print(p.__file__)"],
                             capture_output=True, text=True).stdout.strip())
    """)
    assert "alias_path" in python("-m", "bert.compat", "run", str(child)).stdout
    as_module = python("-m", "bert.compat", "run", "-m", "pytorch_pretrained_bert")  # our __main__: its usage
    assert as_module.returncode == 2 and "Should be used as" in as_module.stderr
    bad = python("-m", "bert.compat", "run", str(tmp_path / "missing.py"))
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such script")


@pytest.mark.slow
def test_the_wheel_installs_an_alias_that_never_shadows_the_original(tmp_path):
    """The wheel carries a .pth that appends the alias folder to sys.path: found when the original is not
    installed, behind it when it is. Nothing of the original's (its package, its command) is in the wheel."""
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("bert/", "stages/", "pipeline/")) or name in ("pyproject.toml", "setup.py", "README.md"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("bert_toolkit-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert bert.compat.PTH_NAME in names
    assert not [n for n in names if n.startswith("pytorch_pretrained_bert") or "/scripts/" in n]
    assert (site / bert.compat.PTH_NAME).read_text().strip() == "bert/compat/alias_path"
    find = ("import importlib.util, site, sys; site.addsitedir(sys.argv[1]); "
            "print(importlib.util.find_spec('pytorch_pretrained_bert').origin)")
    alone = python("-S", "-c", find, str(site))  # -S: no site-packages, so no original
    assert alone.stdout.strip() == str(site / "bert/compat/alias_path/pytorch_pretrained_bert/__init__.py")
    pytest.importorskip("pytorch_pretrained_bert")  # the test environment has the original installed:
    beside = python("-c", find, str(site))
    assert "site-packages/pytorch_pretrained_bert/__init__.py" in beside.stdout


def test_legacy_command_line_forms(tmp_path):
    usage = python("-m", "bert.compat", "run", "-m", "pytorch_pretrained_bert", "convert_tf_checkpoint_to_pytorch")
    assert usage.returncode == 2 and "Should be used as `pytorch_pretrained_bert convert_tf_checkpoint_to_pytorch" \
        in usage.stderr
    gpt = python("-m", "bert", "convert_gpt2_checkpoint", "a", "b")
    assert gpt.returncode == 2  # the bert command does not know it
    other = python("-m", "bert.compat", "run", "-m", "pytorch_pretrained_bert", "convert_gpt2_checkpoint", "a", "b")
    assert other.returncode == 2 and "not part of bert-toolkit" in other.stderr
    missing = python("-m", "bert", "convert_tf_checkpoint_to_pytorch", str(tmp_path / "none.ckpt"),
                     str(tmp_path / "none.json"), str(tmp_path / "out.bin"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "none.json" in missing.stderr
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.xdist_group("tensorflow")
def test_convert_tf_checkpoint_to_pytorch_writes_what_the_original_loads(tiny_config, tmp_path):
    """Google checkpoint -> the original's pytorch_model.bin, through `python -m pytorch_pretrained_bert`;
    the real 0.6.2 package loads the file (strictly) with the same weights."""
    pytest.importorskip("tensorflow")
    original = pytest.importorskip("pytorch_pretrained_bert")
    from bert import BertForPreTraining
    from bert.formats.tf_checkpoint import state_dict_to_tf, write_tf_checkpoint

    torch.manual_seed(0)
    source = BertForPreTraining(tiny_config)
    prefix = write_tf_checkpoint(state_dict_to_tf(source.state_dict(), tiny_config.num_hidden_layers),
                                 tmp_path / "tf" / "bert_model.ckpt")
    config = tmp_path / "bert_config.json"
    config.write_text(json_of(tiny_config))
    out = tmp_path / "pytorch_model.bin"
    result = python("-m", "bert.compat", "run", "-m", "pytorch_pretrained_bert", "convert_tf_checkpoint_to_pytorch",
                    str(prefix), str(config), str(out))
    assert result.returncode == 0, result.stderr
    theirs = original.BertForPreTraining(original.BertConfig(str(config)))
    theirs.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert torch.equal(theirs.bert.encoder.layer[1].attention.self.key.weight,
                       source.bert.encoder.layer[1].attention.self.key.weight)


def json_of(config: BertConfig) -> str:
    """Google's fields only (the original's BertConfig keeps every key, including our layer_norm_eps)."""
    import json

    return json.dumps({k: v for k, v in config.to_dict().items() if k != "layer_norm_eps"})


def test_install_command_never_replaces_a_command(tmp_path, monkeypatch):
    from bert.compat import __main__ as compat_main

    monkeypatch.setattr(compat_main.sysconfig, "get_path", lambda name: str(tmp_path))
    assert compat_main.install_command() == 0
    launcher = tmp_path / "pytorch_pretrained_bert"
    assert os.access(launcher, os.X_OK) and "bert.compat.cli" in launcher.read_text()
    result = subprocess.run([str(launcher)], capture_output=True, text=True)
    assert result.returncode == 2 and "Should be used as" in result.stderr
    launcher.write_text("#!/bin/sh\necho original\n")
    assert compat_main.install_command() == 1
    assert launcher.read_text() == "#!/bin/sh\necho original\n"


def test_old_style_training_script_runs_and_the_original_reads_its_output(minilm_dir, tmp_path):
    """What run_classifier.py does, in miniature: load with the original's arguments, train with BertAdam and
    a schedule object, save pytorch_model.bin + config.json + vocab.txt, reload; then the real 0.6.2 package
    loads the saved folder and gives the same logits."""
    original = pytest.importorskip("pytorch_pretrained_bert")
    out = tmp_path / "out"
    path = script(tmp_path, f"""
        import os, torch
        from pytorch_pretrained_bert.file_utils import PYTORCH_PRETRAINED_BERT_CACHE, WEIGHTS_NAME, CONFIG_NAME
        from pytorch_pretrained_bert.modeling import BertForSequenceClassification
        from pytorch_pretrained_bert.tokenization import BertTokenizer
        from pytorch_pretrained_bert.optimization import BertAdam, WarmupLinearSchedule

        tokenizer = BertTokenizer.from_pretrained({str(minilm_dir)!r}, do_lower_case=True)
        cache_dir = os.path.join(str(PYTORCH_PRETRAINED_BERT_CACHE), 'distributed_-1')
        model = BertForSequenceClassification.from_pretrained({str(minilm_dir)!r}, cache_dir=cache_dir, num_labels=2)
        model.train()
        param_optimizer = list(model.named_parameters())
        no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']
        groups = [{{'params': [p for n, p in param_optimizer if not any(nd in n for nd in no_decay)], 'weight_decay': 0.01}},
                  {{'params': [p for n, p in param_optimizer if any(nd in n for nd in no_decay)], 'weight_decay': 0.0}}]
        optimizer = BertAdam(groups, lr=5e-5, schedule=WarmupLinearSchedule(warmup=0.1, t_total=4))
        tokens = ["[CLS]"] + tokenizer.tokenize("A tiny example, Jacksonville.") + ["[SEP]"]
        input_ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)] * 2)
        segment_ids, input_mask = torch.zeros_like(input_ids), torch.ones_like(input_ids)
        for step in range(4):
            loss = model(input_ids, segment_ids, input_mask, torch.tensor([0, 1]))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        os.makedirs({str(out)!r})
        model_to_save = model.module if hasattr(model, 'module') else model
        torch.save(model_to_save.state_dict(), os.path.join({str(out)!r}, WEIGHTS_NAME))
        model_to_save.config.to_json_file(os.path.join({str(out)!r}, CONFIG_NAME))
        tokenizer.save_vocabulary({str(out)!r})
        model = BertForSequenceClassification.from_pretrained({str(out)!r}, num_labels=2)
        model.eval()
        with torch.no_grad():
            torch.save(model(input_ids, segment_ids, input_mask), os.path.join({str(out)!r}, "logits.pt"))
        print("trained", round(loss.item(), 4))
    """)
    result = python("-m", "bert.compat", "run", str(path), env={"PYTORCH_PRETRAINED_BERT_CACHE": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "logits.pt", "pytorch_model.bin", "vocab.txt"]
    theirs = original.BertForSequenceClassification.from_pretrained(str(out), num_labels=2).eval()
    tokenizer = original.BertTokenizer.from_pretrained(str(out))
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(
        ["[CLS]"] + tokenizer.tokenize("A tiny example, Jacksonville.") + ["[SEP]"])] * 2)
    with torch.no_grad():
        logits = theirs(ids, torch.zeros_like(ids), torch.ones_like(ids))
    ours = torch.load(out / "logits.pt", weights_only=True)
    assert (logits - ours).abs().max().item() < 1e-5
    assert BertForSequenceClassification.from_pretrained(out).num_labels == 2
