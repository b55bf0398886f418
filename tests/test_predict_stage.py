"""Stage predict: every task's test split to the file its benchmark takes, checked against the formats as the
benchmarks' own code writes them (not against our writer): GLUE's server files (nyu-mll/GLUE-baselines
src/main.py: ``index<TAB>prediction``, label strings, STS-B clipped to [0, 5]), SQuAD's predictions.json
(the official evaluate scripts' {qid: answer}), SWAG's predictions.csv (swagaf csv_predict.py: ``,pred``).

The models are tiny seeded folders (tests/predict_helpers.py) laid out as finetune writes them; the test files
are the real MRPC test.tsv and format-exact fixtures of the others (tests/fixtures).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from predict_helpers import tiny_folder

from bert.tasks.registry import TaskKind
from stages import predict
from stages._lib.params import ParamsError, build
from stages._lib.evaluation import EvaluateParams
from stages.predict import PredictParams

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
ANSWERS = EvaluateParams(batch_size=8, precision="fp32", n_best_size=20, max_answer_length=30,
                         null_score_diff_threshold=0.0, baseline_seed=0)
BINARY, NLI2 = {"0", "1"}, {"entailment", "not_entailment"}
NLI3 = {"entailment", "neutral", "contradiction"}
# task -> (fixture folder, the file the server takes, the values it accepts), from GLUE-baselines' writer
GLUE = {
    "cola": ("CoLA", "CoLA.tsv", BINARY), "sst2": ("SST-2", "SST-2.tsv", BINARY),
    "stsb": ("STS-B", "STS-B.tsv", None), "qqp": ("QQP", "QQP.tsv", BINARY),
    "mnli": ("MNLI", "MNLI-m.tsv", NLI3), "mnli-mm": ("MNLI", "MNLI-mm.tsv", NLI3),
    "qnli": ("QNLI", "QNLI.tsv", NLI2), "rte": ("RTE", "RTE.tsv", NLI2), "wnli": ("WNLI", "WNLI.tsv", BINARY),
}
TEST_FILES = {"mnli": "test_matched.tsv", "mnli-mm": "test_mismatched.tsv"}


def _models(root: Path, kind: TaskKind, labels=(), seeds=(1,), **settings) -> Path:
    """models/finetuned/<task> as finetune lays it out: one seed<N> folder per seed."""
    models = root / "models"
    for seed in seeds:
        folder = tiny_folder(root / "made", kind, labels, seed=seed, **settings)
        shutil.copytree(folder, models / f"seed{seed}")
    return models


def _params(model="seed1", **kw) -> PredictParams:
    return PredictParams(model=model, batch_size=kw.get("batch_size", 4), precision="fp32")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _index_column(test_file: Path) -> list[str]:
    """The first column of a GLUE test file below its header: the ids the server matches rows by."""
    return [line.split("\t")[0] for line in test_file.read_text(encoding="utf-8").splitlines()[1:] if line]


def _check_submission(path: Path, test_file: Path, accepted) -> list[str]:
    rows = _rows(path)
    assert rows[0] == ["index", "prediction"]
    assert [r[0] for r in rows[1:]] == _index_column(test_file)  # every test row, in order, with its index
    values = [r[1] for r in rows[1:]]
    if accepted is None:  # STS-B: a score of the 0-5 scale
        assert all(re.fullmatch(r"\d\.\d{3}", v) and 0.0 <= float(v) <= 5.0 for v in values), values
    else:
        assert set(values) <= accepted
    return values


@pytest.mark.parametrize("task", sorted(GLUE))
def test_every_glue_task_writes_the_servers_file(tmp_path, task):
    folder, name, accepted = GLUE[task]
    from stages._lib.tasks import get_task

    spec = get_task(task)
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "glue" / folder, data)
    kind = spec.kind
    models = _models(tmp_path, kind, spec.labels or ())
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict(task, data, models, tmp_path / "none.json", out, _params(), ANSWERS)
    test_file = data / TEST_FILES.get(task, "test.tsv")
    assert record["files"] == {name: len(_index_column(test_file))} and record["split"] == "test"
    _check_submission(out / name, test_file, accepted)
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_the_mnli_model_also_predicts_the_diagnostic_set(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "glue" / "MNLI", data)
    shutil.copyfile(FIXTURES / "glue" / "diagnostic" / "diagnostic.tsv", data / "diagnostic.tsv")
    models = _models(tmp_path, TaskKind.PAIR_CLASSIFICATION, ("contradiction", "entailment", "neutral"))
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict("mnli", data, models, tmp_path / "none.json", out, _params(), ANSWERS)
    assert set(record["files"]) == {"MNLI-m.tsv", "AX.tsv"}
    _check_submission(out / "AX.tsv", data / "diagnostic.tsv", NLI3)
    # mnli-mm's model predicts the mismatched file and not AX
    out_mm = tmp_path / "out-mm"
    out_mm.mkdir()
    assert set(predict.predict("mnli-mm", data, models, tmp_path / "none.json", out_mm, _params(),
                               ANSWERS)["files"]) == {"MNLI-mm.tsv"}


def test_the_real_mrpc_test_file(tmp_path, shared_data):
    data = shared_data / "glue" / "MRPC"
    models = _models(tmp_path, TaskKind.PAIR_CLASSIFICATION, ("0", "1"))
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict("mrpc", data, models, tmp_path / "none.json", out, _params(batch_size=64), ANSWERS)
    assert record["files"] == {"MRPC.tsv": 1725}
    values = _check_submission(out / "MRPC.tsv", data / "test.tsv", BINARY)
    assert len(values) == 1725
    assert _index_column(data / "test.tsv") == [str(i) for i in range(1725)]


def _qids(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [q["id"] for article in data for p in article["paragraphs"] for q in p["qas"]]


def test_squad_v1_predictions_json(tmp_path):
    from stages._lib.builtin_data import write_builtin

    data = tmp_path / "data"
    write_builtin("demo-qa", data, 4, 12, seed=0)  # SQuAD v1.1's layout
    models = _models(tmp_path, TaskKind.SQUAD, max_seq_length=48, doc_stride=16, max_query_length=12)
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict("squad1", data, models, tmp_path / "none.json", out, _params(), ANSWERS)
    # no test file: the dev file's questions, as run_squad.py's --predict_file
    assert record["split"] == "dev" and record["files"] == {"predictions.json": len(_qids(data / "dev-v1.1.json"))}
    answers = json.loads((out / "predictions.json").read_text())
    assert sorted(answers) == sorted(_qids(data / "dev-v1.1.json"))
    assert all(isinstance(a, str) and a for a in answers.values())  # v1.1: every question is answered


def test_squad_v2_null_answers_follow_the_threshold(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(FIXTURES / "squad_v2_sample.json", data / "dev-v2.0.json")
    models = _models(tmp_path, TaskKind.SQUAD, max_seq_length=48, doc_stride=16, max_query_length=12,
                     version_2_with_negative=True)
    qids = _qids(data / "dev-v2.0.json")
    found = {}
    for threshold in (-1e9, 1e9):  # the null answer always wins / never wins
        out = tmp_path / f"out{threshold}"
        out.mkdir()
        settings = EvaluateParams(**{**ANSWERS.__dict__, "null_score_diff_threshold": threshold})
        predict.predict("squad2", data, models, tmp_path / "none.json", out, _params(), settings)
        found[threshold] = json.loads((out / "predictions.json").read_text())
        assert sorted(found[threshold]) == sorted(qids)
    assert set(found[-1e9].values()) == {""} and "" not in found[1e9].values()


def test_swag_predictions_csv(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(FIXTURES / "swag_test_sample.csv", data / "test.csv")
    models = _models(tmp_path, TaskKind.MULTIPLE_CHOICE, num_choices=4)
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict("swag", data, models, tmp_path / "none.json", out, _params(), ANSWERS)
    with open(data / "test.csv", newline="", encoding="utf-8") as f:
        n = len(list(csv.reader(f))) - 1
    assert record["files"] == {"predictions.csv": n}
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == ",pred"  # pandas' to_csv(columns=["pred"]): an unnamed index column
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(n)]
    assert {line.split(",")[1] for line in lines[1:]} <= {"0", "1", "2", "3"}


def test_which_model_best_or_a_seed(tmp_path):
    models = _models(tmp_path, TaskKind.PAIR_CLASSIFICATION, ("0", "1"), seeds=(1, 2))
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"mrpc": {"chosen": {"seed": 2, "metric": "f1", "value": 80.0}}}))
    assert predict.model_folder(models, "mrpc", _params("best"), report) == (models / "seed2", 2)
    assert predict.model_folder(models, "mrpc", _params("seed1"), report) == (models / "seed1", 1)
    with pytest.raises(ValueError, match=r"missing model of mrpc seed 3; it is produced by the finetune stage"):
        predict.model_folder(models, "mrpc", _params("seed3"), report)
    with pytest.raises(ValueError, match="no chosen run for rte"):
        predict.model_folder(models, "rte", _params("best"), report)
    with pytest.raises(ValueError, match="report"):
        predict.model_folder(models, "mrpc", _params("best"), tmp_path / "missing.json")
    # a search grid: the report's chosen setting names the folder (stages._lib.search), for best and seed<N>
    for seed in (1, 2):
        shutil.copytree(models / f"seed{seed}", models / "lr5e-05" / f"seed{seed}")
    report.write_text(json.dumps({"mrpc": {"chosen": {"seed": 2, "setting": {"learning_rate": 5e-05}}}}))
    assert predict.model_folder(models, "mrpc", _params("best"), report) == (models / "lr5e-05/seed2", 2)
    assert predict.model_folder(models, "mrpc", _params("seed1"), report) == (models / "lr5e-05/seed1", 1)


def test_a_task_without_a_test_file_is_said_not_failed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\nok\t1\n")
    models = _models(tmp_path, TaskKind.SINGLE_CLASSIFICATION, ("0", "1"))
    out = tmp_path / "out"
    out.mkdir()
    record = predict.predict("sst2", data, models, tmp_path / "none.json", out, _params(), ANSWERS)
    assert record["files"] == {} and "has no test file (test.tsv)" in record["skipped"]


@pytest.mark.parametrize("value, message", [
    ("Best", "expected best or seed<N>"), ("seed", "expected best or seed<N>"), ("seed01", "expected best or seed<N>"),
    (7, "expected a string"), ("seed-1", "expected best or seed<N>"),
])
def test_bad_model_choices_are_named(value, message):
    with pytest.raises(ParamsError, match=rf"params.yaml: predict.model: {message}"):
        build(PredictParams, {"model": value, "batch_size": 8, "precision": "fp32"}, "predict", "params.yaml")


def test_params_check_refuses_a_seed_that_is_not_trained(tmp_path):
    from pipeline.params_check import check_project

    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["predict"]["model"] = "seed3"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ParamsError, match=r"predict.model: seed3 names no model: seed 3 is not one of seeds \[1, 2\]"):
        check_project(tmp_path)
    values["predict"]["model"] = "seed2"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    check_project(tmp_path)


@pytest.mark.parametrize("windows, message", [
    ({"stride": -1, "combine": "mean"}, "tokenize.windows.stride: expected at least 0, got -1"),
    ({"stride": 8, "combine": "median"}, "tokenize.windows.combine: expected one of mean, max, got 'median'"),
    ({"stride": 8}, "key tokenize.windows.combine is missing"),
    ({"stride": True, "combine": "max"}, "tokenize.windows.stride: expected an integer"),
])
def test_bad_window_settings_are_named(windows, message):
    from stages.tokenize import TokenizeParams

    values = yaml.safe_load((REPO / "params.yaml").read_text())["tokenize"]
    with pytest.raises(ParamsError, match=re.escape(f"params.yaml: {message}")):
        build(TokenizeParams, {**values, "windows": windows}, "tokenize", "params.yaml")
