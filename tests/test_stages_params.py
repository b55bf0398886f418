"""params.yaml: the repo's file parses; unknown, missing and ill-typed keys fail naming the key; values are
read with YAML 1.2 rules, as DVC reads them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from stages import (builtin_corpus, convert, download, evaluate, finetune, predict, pretrain, pretrain_data, report,
                    tokenize)
from stages._lib.params import ParamsError, load_matrix, load_section, read_params_file
from stages._lib.tasks import known_tasks

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = REPO / "params.yaml"
# section -> its dataclass, per params file
SECTIONS = {"model": convert.ModelParams, "data": download.DataParams, "tokenize": tokenize.TokenizeParams,
            "finetune": finetune.FinetuneParams, "evaluate": evaluate.EvaluateParams, "report": report.ReportParams,
            "predict": predict.PredictParams}
PRETRAIN_SECTIONS = {"model": convert.ModelParams, "corpus": builtin_corpus.CorpusParams,
                     "instances": pretrain_data.InstancesParams, "pretrain": pretrain.PretrainParams}


def _write(tmp_path: Path, edit) -> Path:
    values = yaml.safe_load(REPO_PARAMS.read_text())
    edit(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.mark.parametrize("path, sections", [(REPO_PARAMS, SECTIONS),
                                            (REPO / "pretrain" / "params.yaml", PRETRAIN_SECTIONS)])
def test_repo_params_parse_and_every_section_has_its_dataclass(path, sections):
    from stages._lib.datasets import load_datasets

    values = read_params_file(path)
    # datasets: your own tasks (empty here); search: the grid over finetune's keys (stages/_lib/search.py)
    assert set(values) - {"tasks", "seeds", "datasets", "search"} == set(sections)
    for section, cls in sections.items():
        load_section(section, cls, path)
    assert load_datasets(path) == {}


def test_repo_params_name_known_tasks():
    matrix = load_matrix(REPO_PARAMS)
    assert set(matrix.tasks) <= set(known_tasks())
    assert matrix.seeds and all(isinstance(s, int) for s in matrix.seeds)
    # the embedded offline demo: the packaged model and the built-in tasks
    assert load_section("model", convert.ModelParams, REPO_PARAMS).name == "minilm-l6-h384-uncased"
    assert set(matrix.tasks) == {"demo-pair", "demo-qa", "demo-mc"}


# YAML 1.1 (PyYAML) and YAML 1.2 (ruamel.yaml, DVC) read these differently; we read them as DVC does.
YAML_12 = [
    ("5e-5", 5e-5),  # 1.1: the text "5e-5"
    ("1.0e-4", 1e-4),
    ("1:30", "1:30"),  # 1.1: sexagesimal 90
    ("010", 10),  # 1.1: octal 8
    ("0o10", 8),
    ("yes", "yes"),  # 1.1: true
    ("on", "on"),
    ("'5e-5'", "5e-5"),
    ("3", 3),
]


@pytest.mark.parametrize("text, value", YAML_12, ids=[t for t, _ in YAML_12])
def test_yaml_12_scalars(tmp_path, text, value):
    path = tmp_path / "p.yaml"
    path.write_text(f"a: {text}\n")
    read = read_params_file(path)["a"]
    assert read == value and type(read) is type(value)


def test_dvc_reads_the_same_values(tmp_path):
    """DVC's own params loader (what `dvc repro` records in dvc.lock and interpolates into cmd)."""
    from dvc.utils.serialize import load_yaml

    path = tmp_path / "p.yaml"
    path.write_text("".join(f"k{i}: {text}\n" for i, (text, _) in enumerate(YAML_12)))
    ours, dvcs = read_params_file(path), load_yaml(str(path))
    assert [(k, v, type(v)) for k, v in ours.items()] == [(k, v, type(v)) for k, v in dvcs.items()]
    for shipped in (REPO_PARAMS, REPO / "pretrain" / "params.yaml"):
        assert read_params_file(shipped) == load_yaml(str(shipped))


@pytest.mark.parametrize("key, text, expected", [
    ("epochs", "1:30", "finetune.epochs: expected a number, got '1:30' (str)"),
    ("resume", "yes", "finetune.resume: expected true or false, got 'yes' (str)"),
    ("group_by_length", "on", "finetune.group_by_length: expected true or false, got 'on' (str)"),
    ("learning_rate", "5e-5", None),
    ("log_every", "010", None),
])
def test_yaml_12_scalars_reach_the_stage_as_dvc_reads_them(tmp_path, key, text, expected):
    path = tmp_path / "params.yaml"
    lines = REPO_PARAMS.read_text(encoding="utf-8").splitlines()
    start = lines.index("finetune:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i][:1].isalpha())  # the next top-level key
    at = [i for i in range(start, end) if lines[i].startswith(f"  {key}:")]  # finetune's (search lists some too)
    assert len(at) == 1
    lines[at[0]] = f"  {key}: {text}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if expected is None:
        params = load_section("finetune", finetune.FinetuneParams, path)
        assert {"learning_rate": 5e-5, "log_every": 10}[key] == getattr(params, key)
        return
    with pytest.raises(ParamsError) as err:
        load_section("finetune", finetune.FinetuneParams, path)
    assert str(err.value) == f"{path}: {expected}"


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
    (lambda v: v["finetune"].update(warmup_proportion=1.0), "finetune.warmup_proportion", "less than 1"),
    (lambda v: v["finetune"].update(schedule="cosine"), "finetune.schedule", "expected one of"),
    (lambda v: v["finetune"].update(seed=3), "finetune.seed", "unknown key"),  # the seed is each run's --seed
    (lambda v: v["finetune"].update(loss_scale=128.0), "finetune.loss_scale", "for precision fp16 only"),
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
        load_section(section, SECTIONS[section], path)
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
        load_section("tokenize", tokenize.TokenizeParams, _write(tmp_path, lambda v: v.pop("tokenize")))
    with pytest.raises(ParamsError, match="params file not found"):
        load_section("tokenize", tokenize.TokenizeParams, tmp_path / "nope.yaml")


def test_stage_cli_fails_naming_the_key(tmp_path, caplog):
    path = _write(tmp_path, lambda v: v["data"].update(sorce="local"))
    with caplog.at_level(logging.ERROR):
        status = download.main(["--task", "demo-pair", "--out", str(tmp_path / "raw"), "--params", str(path)])
    assert status == 1
    assert "data.sorce" in caplog.text
    assert not (tmp_path / "raw").exists()
