"""Your own dataset, badly written: every bad file is refused by the download stage in one line naming the file,
the line and the column, and nothing is written; every bad ``datasets`` entry is refused by pipeline.params_check
(what `make run` runs before DVC) in one line naming params.yaml and the key."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from stages import download

REPO = Path(__file__).resolve().parents[1]
HEADER = "review,sentiment\n"
GOOD = "".join(f"Row {i} is {'good' if i % 2 else 'bad'}.,{'pos' if i % 2 else 'neg'}\n" for i in range(10))
ENTRY = {"kind": "classification", "train": "datasets/train.csv", "dev": "datasets/dev.csv", "text": ["review"],
         "label": "sentiment"}

# case -> (files under datasets/, changes to ENTRY, fragments of the one error line)
FILE_CASES = {
    "a missing column": ({"dev.csv": "review,stars\nNice.,pos\n"}, {},
                         ["dev.csv:1: no column 'sentiment'", "the header names 'review', 'stars'"]),
    "a JSONL row without the column": ({"train.jsonl": '{"review": "a", "sentiment": "pos"}\n{"review": "b"}\n'},
                                       {"train": "datasets/train.jsonl"}, ["train.jsonl:2: no column 'sentiment'"]),
    "an empty text": ({"dev.csv": HEADER + "Fine.,pos\n  ,neg\n"}, {}, ["dev.csv:3: column 'review' is empty"]),
    "an empty label": ({"train.csv": HEADER + GOOD + "Odd.,\n"}, {}, ["train.csv:12: column 'sentiment'", "empty"]),
    "a label not in labels": ({"train.csv": HEADER + GOOD + "Odd.,meh\n"}, {"labels": ["neg", "pos"]},
                              ["train.csv:12: column 'sentiment': label 'meh' is not one of the labels "
                               "['neg', 'pos']"]),
    "a dev label train does not have": ({"dev.csv": HEADER + "Odd.,meh\n"}, {},
                                        ["dev.csv:2: column 'sentiment': label 'meh' is not one of the labels "
                                         "['neg', 'pos'], those the train file holds (datasets/train.csv"]),
    "one label only": ({"train.csv": HEADER + "a,pos\nb,pos\n"}, {},
                       ["train.csv: column 'sentiment' holds 1 label name(s) (pos)", "at least 2"]),
    "a non-numeric regression value": ({"train.csv": "review,score\nGood.,4.5\nBad.,four\n"},
                                       {"kind": "regression", "label": "score"},
                                       ["train.csv:3: column 'score': 'four' is not a number"]),
    "a non-finite regression value": ({"train.csv": "review,score\nGood.,4.5\nBad.,nan\n"},
                                      {"kind": "regression", "label": "score"},
                                      ["train.csv:3: column 'score': 'nan' is not a finite number"]),
    "a ragged CSV row": ({"train.csv": HEADER + "Fine.,pos\nToo,many,fields\n"}, {},
                         ["train.csv:3: 3 fields, but the header (line 1) names 2"]),
    "a bad JSON line": ({"train.jsonl": '{"review": "a", "sentiment": "pos"}\n{"review": "b", sentiment}\n'},
                        {"train": "datasets/train.jsonl"}, ["train.jsonl:2: invalid JSON"]),
    "a JSON line that is no object": ({"train.jsonl": '["a", "pos"]\n'}, {"train": "datasets/train.jsonl"},
                                      ["train.jsonl:1: expected a JSON object, got list"]),
    "an empty split": ({"dev.csv": HEADER}, {}, ["dev.csv: no rows: the dev split would be empty"]),
    "an empty file": ({"dev.csv": ""}, {}, ["dev.csv: empty file, expected a header row"]),
    "a split ratio leaving an empty split": ({"all.csv": HEADER + GOOD}, {"file": "datasets/all.csv", "train": None,
                                                                       "dev": None, "split": {"dev": 0.04, "seed": 0}},
                                             ["all.csv (datasets.mine.split): dev 0.04 of 10 rows is no row"]),
    "a multi-label name not in labels": ({"train.csv": "review,tags\nA.,x|y\nB.,x|zz\n"},
                                         {"kind": "multi-label", "label": "tags", "labels": ["x", "y"],
                                          "label_separator": "|"},
                                         ["train.csv:3: column 'tags': label 'zz' is not one of the labels"]),
    "a TSV with a quote-less ragged row": ({"train.tsv": "review\tsentiment\nGood\tpos\tmore\n"},
                                           {"train": "datasets/train.tsv"}, ["train.tsv:2: 3 fields"]),
    "a file whose name says no format": ({"train.txt": HEADER + GOOD}, {"train": "datasets/train.txt"},
                                         ["train.txt: the name does not say its format"]),
    "a file that is not UTF-8": ({"train.csv": HEADER + "caf\xe9,pos\n"}, {}, ["train.csv:2: not UTF-8"]),
}


def _project(root: Path, files: dict[str, str], changes: dict) -> Path:
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    for name, text in {"train.csv": HEADER + GOOD, "dev.csv": HEADER + GOOD[:40], **files}.items():
        data = text.encode("latin-1") if "\xe9" in text else text.encode()
        (root / "datasets" / name).write_bytes(data)
    entry = {k: v for k, v in {**ENTRY, **changes}.items() if v is not None}
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values.update(tasks=["mine"], datasets={"mine": entry})
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return root / "params.yaml"


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_download_names_the_file_line_and_column(tmp_path, caplog, case):
    files, changes, fragments = FILE_CASES[case]
    params = _project(tmp_path, files, changes)
    out = tmp_path / "data/raw/mine"
    with caplog.at_level(logging.ERROR):
        assert download.main(["--task", "mine", "--out", str(out), "--params", str(params)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert not out.exists() and not any(p.name.startswith(".") for p in out.parent.iterdir())


# case -> (changes to the entry (None: drop the key), or a whole datasets value; fragments of the error line)
PARAMS_CASES = {
    "an unknown key": ({"colour": "red"}, ["datasets.mine: unknown key colour"]),
    "an unknown kind": ({"kind": "ranking"}, ["datasets.mine.kind: expected one of classification, multi-label"]),
    "no label key": ({"label": None}, ["datasets.mine: key label is missing"]),
    "three text columns": ({"text": ["a", "b", "c"]}, ["datasets.mine.text: expected a list of one column name"]),
    "labels for a regression": ({"kind": "regression", "labels": ["a", "b"]}, ["datasets.mine.labels: a regression"]),
    "one label name": ({"labels": ["only"]}, ["datasets.mine.labels: expected a list of at least 2"]),
    "a repeated label name": ({"labels": ["a", "a"]}, ["datasets.mine.labels: repeated names"]),
    "a separator for single-label": ({"label_separator": "|"}, ["datasets.mine.label_separator: only a multi-label"]),
    "an unknown format": ({"format": "xlsx"}, ["datasets.mine.format: expected one of csv, tsv, jsonl"]),
    "no dev file": ({"dev": None}, ["datasets.mine: key dev is missing"]),
    "file and train both": ({"file": "datasets/train.csv", "split": {"dev": 0.2}},
                            ["datasets.mine.train: give either"]),
    "a file without split": ({"file": "datasets/train.csv", "train": None, "dev": None},
                             ["datasets.mine.split: one file"]),
    "a split ratio of 1": ({"file": "datasets/train.csv", "train": None, "dev": None, "split": {"dev": 1}},
                           ["datasets.mine.split.dev: expected a fraction"]),
    "ratios leaving no train": ({"file": "datasets/train.csv", "train": None, "dev": None,
                                 "split": {"dev": 0.5, "test": 0.5}}, ["datasets.mine.split: dev and test take 1"]),
    "an unknown split key": ({"file": "datasets/train.csv", "train": None, "dev": None,
                              "split": {"dev": 0.2, "shuffle": True}}, ["datasets.mine.split: unknown key shuffle"]),
    "a file outside datasets/": ({"train": "data/train.csv"}, ["datasets.mine.train: data/train.csv is not under "
                                                               "datasets/"]),
    "a path climbing out": ({"train": "datasets/../train.csv"}, ["datasets.mine.train", "is not under datasets/"]),
    "a missing file": ({"dev": "datasets/nope.csv"}, ["datasets.mine.dev:", "nope.csv is not a file"]),
    "a built-in task's name": ("rename:mrpc", ["datasets.mrpc: mrpc is a built-in task"]),
    "a name DVC cannot take": ("rename:my reviews", ["datasets: name 'my reviews'"]),
    "a task in no section": ("tasks:other", ["tasks[0]: unknown task 'other'", "datasets section"]),
    "no datasets section": ("drop", ["section 'datasets' is missing"]),
}


@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_params_check_names_the_key(tmp_path, case):
    from pipeline.params_check import check_project
    from stages._lib.params import ParamsError

    change, fragments = PARAMS_CASES[case]
    params = _project(tmp_path, {}, change if isinstance(change, dict) else {})
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    if isinstance(change, str):
        values = yaml.safe_load(params.read_text())
        how, _, arg = change.partition(":")
        if how == "rename":
            values["datasets"] = {arg: values["datasets"]["mine"]}
            values["tasks"] = [arg]
        elif how == "tasks":
            values["tasks"] = [arg]
        else:
            del values["datasets"]
        params.write_text(yaml.safe_dump(values, sort_keys=False))
    with pytest.raises(ParamsError) as info:
        check_project(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{params}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_good_entry_passes_params_check(tmp_path):
    from pipeline.params_check import check_project

    _project(tmp_path, {}, {})
    shutil.copyfile(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    check_project(tmp_path)
