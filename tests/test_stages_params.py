"""params.yaml: the repo's file parses; unknown, missing and ill-typed keys fail naming the key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from stages import download
from stages.params import SECTIONS, ParamsError, load_matrix, load_section, read_params_file
from stages.tasks import known_tasks

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _write(tmp_path: Path, edit) -> Path:
    values = yaml.safe_load(REPO_PARAMS.read_text())
    edit(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_repo_params_parse_and_name_known_tasks():
    for section in SECTIONS:
        load_section(section, REPO_PARAMS)
    matrix = load_matrix(REPO_PARAMS)
    assert set(matrix.tasks) <= set(known_tasks())
    assert matrix.seeds and all(isinstance(s, int) for s in matrix.seeds)
    # the embedded offline demo: the packaged model and the built-in tasks
    assert load_section("model", REPO_PARAMS).name == "minilm-l6-h384-uncased"
    assert set(matrix.tasks) == {"demo-pair", "demo-qa", "demo-mc"}


def test_yaml_12_floats_like_dvc(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 5e-5\nb: 1.0e-4\nc: '5e-5'\nd: 3\n")
    values = read_params_file(path)
    assert values == {"a": 5e-5, "b": 1e-4, "c": "5e-5", "d": 3}


@pytest.mark.parametrize("edit, key, expected", [
    (lambda v: v["finetune"].update(lr=1e-4), "finetune.lr", "unknown key"),
    (lambda v: v["finetune"].pop("epochs"), "finetune.epochs", "missing"),
    (lambda v: v["finetune"].update(epochs="three"), "finetune.epochs", "expected a number"),
    (lambda v: v["finetune"].update(global_batch_size=32.5), "finetune.global_batch_size", "expected an integer"),
    (lambda v: v["finetune"].update(global_batch_size=True), "finetune.global_batch_size", "expected an integer"),
    (lambda v: v["finetune"].update(precision="fp8"), "finetune.precision", "expected one of fp32, fp16, bf16"),
    (lambda v: v["finetune"].update(resume="yes please"), "finetune.resume", "expected true or false"),
    (lambda v: v["finetune"].update(learning_rate=0), "finetune.learning_rate", "expected more than 0"),
    (lambda v: v["finetune"].update(warmup_proportion=1.5), "finetune.warmup_proportion", "less than 1"),
    (lambda v: v["data"]["builtin"].update(train_examples=0), "data.builtin.train_examples", "at least 1"),
    (lambda v: v["data"]["builtin"].update(size=3), "data.builtin.size", "unknown key"),
    (lambda v: v["data"].update(source="ftp"), "data.source", "expected one of builtin, download, local"),
    (lambda v: v["tokenize"].update(max_seq_length="64"), "tokenize.max_seq_length", "expected an integer"),
    (lambda v: v["model"].update(name=None), "model.name", "expected a string"),
])
def test_bad_keys_are_named(tmp_path, edit, key, expected):
    path = _write(tmp_path, edit)
    section = key.split(".")[0]
    with pytest.raises(ParamsError) as err:
        load_section(section, path)
    assert key in str(err.value) and expected in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("edit, expected", [
    (lambda v: v.update(seeds=[1, "two"]), "seeds[1]: expected an integer"),
    (lambda v: v.update(seeds=[]), "seeds: expected a non-empty list"),
    (lambda v: v.update(tasks="mrpc"), "tasks: expected a list"),
    (lambda v: v.update(tasks=["mrpc", "mrpc"]), "tasks: repeated"),
])
def test_bad_matrix(tmp_path, edit, expected):
    with pytest.raises(ParamsError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_matrix(_write(tmp_path, edit))


def test_missing_section_and_file(tmp_path):
    with pytest.raises(ParamsError, match="section 'tokenize' is missing"):
        load_section("tokenize", _write(tmp_path, lambda v: v.pop("tokenize")))
    with pytest.raises(ParamsError, match="params file not found"):
        load_section("tokenize", tmp_path / "nope.yaml")


def test_stage_cli_fails_naming_the_key(tmp_path, caplog):
    path = _write(tmp_path, lambda v: v["data"].update(sorce="local"))
    with caplog.at_level(logging.ERROR):
        status = download.main(["--task", "demo-pair", "--out", str(tmp_path / "raw"), "--params", str(path)])
    assert status == 1
    assert "data.sorce" in caplog.text
    assert not (tmp_path / "raw").exists()
