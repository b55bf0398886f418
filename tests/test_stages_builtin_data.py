"""The built-in demo datasets: deterministic, in the real formats, read by the real readers."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from bert.tasks.swag import read_swag_examples
from stages._lib.builtin_data import MC_HEADER, write_builtin
from stages._lib.tasks import get_task


@pytest.mark.parametrize("task", ["demo-pair", "demo-qa", "demo-mc"])
def test_deterministic(tmp_path, task):
    a = write_builtin(task, tmp_path / "a", 40, 10, seed=3)
    write_builtin(task, tmp_path / "b", 40, 10, seed=3)
    write_builtin(task, tmp_path / "c", 40, 10, seed=4)
    for name in a.values():
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    # train and dev are different examples
    files = [(tmp_path / "a" / n).read_text() for n in a.values()]
    assert files[0] != files[1]


@pytest.mark.parametrize("task, n", [("demo-pair", 64), ("demo-qa", 30), ("demo-mc", 25)])
def test_read_by_the_real_readers(tmp_path, task, n):
    files = write_builtin(task, tmp_path, n, 11, seed=0)
    spec = get_task(task)
    assert len(spec.processor.get_examples(tmp_path, "train")) == n
    assert len(spec.processor.get_examples(tmp_path, "dev")) == 11
    if task != "demo-qa":  # a test split without labels, read as the real test files are (SQuAD's is hidden)
        test = spec.processor.get_examples(tmp_path, "test")
        assert files["test"] == spec.processor.files["test"] and len(test) == 11
        assert all(e.label is None for e in test)


def test_pair_is_mrpc_layout_and_balanced(tmp_path):
    write_builtin("demo-pair", tmp_path, 200, 10, seed=0)
    lines = (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    assert all(len(line.split("\t")) == 5 for line in lines)
    labels = Counter(line.split("\t")[0] for line in lines[1:])
    assert labels == {"0": 100, "1": 100}
    examples = get_task("demo-pair").processor.get_examples(tmp_path, "train")
    # a paraphrase never repeats its first sentence word for word
    assert all(e.text_a != e.text_b for e in examples)


def test_qa_answers_are_spans(tmp_path):
    write_builtin("demo-qa", tmp_path, 50, 5, seed=0)
    data = json.loads((tmp_path / "train-v1.1.json").read_text())
    assert data["version"] == "1.1"
    ids = set()
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                ids.add(qa["id"])
                for answer in qa["answers"]:
                    start = answer["answer_start"]
                    assert paragraph["context"][start: start + len(answer["text"])] == answer["text"]
    assert len(ids) == 50
    examples = get_task("demo-qa").processor.get_examples(tmp_path, "train")
    assert all(" ".join(e.doc_tokens[e.start_position: e.end_position + 1]).rstrip(".") == e.orig_answer_text
               for e in examples)


def test_mc_is_swagaf_csv(tmp_path):
    write_builtin("demo-mc", tmp_path, 40, 5, seed=0)
    rows = list(csv.reader((tmp_path / "train.csv").open(newline="")))
    assert rows[0] == MC_HEADER == ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                                    "ending0", "ending1", "ending2", "ending3", "label"]
    examples = read_swag_examples(tmp_path / "train.csv", is_training=True)
    assert len({e.swag_id for e in examples}) == 40
    assert all(len(set(e.endings)) == 4 for e in examples)
    # the gold position is spread over the four choices
    assert len(Counter(e.label for e in examples)) == 4


def test_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="no built-in dataset for task 'mrpc'"):
        write_builtin("mrpc", tmp_path, 1, 1, 0)
