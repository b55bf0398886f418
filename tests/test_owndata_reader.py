"""bert.tasks.owndata alone: one file cut into train, dev and test (sizes, reproducibility, file order), an id
column, label names inferred and sorted (as numbers when they are), and the normalised folder read back as the
user's rows were read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bert.tasks.owndata import Layout, OwnDataProcessor, infer_labels, read_split, write_normalised
from stages._lib.datasets import check_datasets, materialise


def _csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(row) + "\n" for row in rows))
    return path


def test_one_file_cut_by_ratios_is_reproducible_and_disjoint(tmp_path):
    rows = [("id", "text", "stars")] + [(f"r{i}", f"text number {i}", str(1 + i % 10)) for i in range(50)]
    params = tmp_path / "params.yaml"
    _csv(tmp_path / "datasets/stars.csv", rows)
    entry = {"kind": "classification", "file": "datasets/stars.csv", "split": {"dev": 0.2, "test": 0.1, "seed": 5},
             "text": ["text"], "label": "stars", "id": "id"}
    dataset = check_datasets({"stars": entry}, params)["stars"]
    outs = []
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        files, origin = materialise(dataset, params, out)
        outs.append({s: (out / name).read_text() for s, name in files.items()})
    assert outs[0] == outs[1]  # the seed decides
    split = {s: [json.loads(line) for line in text.splitlines()] for s, text in outs[0].items()}
    assert {s: len(v) for s, v in split.items()} == {"train": 35, "dev": 10, "test": 5}  # round(0.2 x 50), ...
    ids = [r["id"] for v in split.values() for r in v]
    assert sorted(ids) == sorted(f"r{i}" for i in range(50))  # every row once, named by the id column
    for v in split.values():  # each split in file order
        assert [int(r["id"][1:]) for r in v] == sorted(int(r["id"][1:]) for r in v)
    described = json.loads((tmp_path / "out0/dataset.json").read_text())
    assert described["labels"] == [str(i) for i in range(1, 11)]  # 1 2 ... 10: as numbers, not "1" "10" "2"
    assert origin["sources"]["file"]["path"] == "datasets/stars.csv"
    other = check_datasets({"stars": {**entry, "split": {"dev": 0.2, "test": 0.1, "seed": 6}}}, params)["stars"]
    (tmp_path / "out2").mkdir()
    materialise(other, params, tmp_path / "out2")
    assert (tmp_path / "out2/dev.jsonl").read_text() != outs[0]["dev"]  # another seed, another cut


def test_inferred_labels_sort_as_text_unless_all_are_numbers():
    from bert.tasks.records import InputExample

    def names(*labels):
        return infer_labels([InputExample(str(i), "t", None, label) for i, label in enumerate(labels)])

    assert names("b", "a", "c", "a") == ("a", "b", "c")
    assert names("10", "2", "1") == ("1", "2", "10")
    assert names("10", "2", "x") == ("10", "2", "x")
    assert names(("x", "y"), ("z",)) == ("x", "y", "z")  # multi-label rows


def test_the_normalised_folder_reads_back_as_the_files_did(tmp_path):
    layout = Layout("multi-label", ("a", "b"), "tags", ("red", "blue", "green"), ";")
    source = _csv(tmp_path / "pairs.csv", [("a", "b", "tags"), ("one", "two", "red;blue"), ("three", "four", ""),
                                           ("five", "six", " green ; red ;")])
    examples = read_split(source, layout, "train", layout.labels)
    assert [e.label for e in examples] == [("red", "blue"), (), ("green", "red")]
    assert [e.guid for e in examples] == ["train-2", "train-3", "train-4"]
    (tmp_path / "out").mkdir()
    write_normalised(tmp_path / "out", {"train": examples, "dev": examples[:1]}, layout, layout.labels, {})
    processor = OwnDataProcessor("pairs", "multi-label", layout.labels, pair=True)
    assert processor.get_examples(tmp_path / "out", "train") == examples
    with pytest.raises(ValueError, match="pairs has no test split"):
        processor.get_examples(tmp_path / "out", "test")
