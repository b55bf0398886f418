"""`bert predict`: every task kind, every input format, the outputs' fields, and every bad input as one line,
exit status 1 and no output file."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from bert.cli.commands import main
from bert.tasks.registry import TaskKind
from predict_helpers import SENTENCES, tiny_folder

PAIRS = [(SENTENCES[i], SENTENCES[(i + 3) % len(SENTENCES)]) for i in range(len(SENTENCES))]
CONTEXT = SENTENCES[1] + " " + SENTENCES[5]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "pair": tiny_folder(root, TaskKind.PAIR_CLASSIFICATION, ("no", "maybe", "yes")),
        "regression": tiny_folder(root, TaskKind.REGRESSION),
        "multi": tiny_folder(root, TaskKind.MULTI_LABEL_CLASSIFICATION, ("animals", "places", "colours")),
        "qa": tiny_folder(root, TaskKind.SQUAD, max_seq_length=24, doc_stride=6, max_query_length=6),
        "qa2": tiny_folder(root, TaskKind.SQUAD, max_seq_length=24, doc_stride=6, max_query_length=6,
                           version_2_with_negative=True, seed=1),
        "mc": tiny_folder(root, TaskKind.MULTIPLE_CHOICE, num_choices=3),
    }


def _run(capsys, *args, stdin: str | None = None, monkeypatch=None) -> tuple[int, list[dict], str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8"))))
    status = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def _write_table(path, header, rows, delimiter):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
                            escapechar="\\")
        writer.writerow(header)
        writer.writerows(rows)


def test_pairs_in_every_format_give_the_same_predictions(tmp_path, folders, capsys, monkeypatch):
    files = {"tsv": tmp_path / "in.tsv", "csv": tmp_path / "in.csv", "jsonl": tmp_path / "in.jsonl",
             "json": tmp_path / "in.json"}
    _write_table(files["tsv"], ["id", "sentence1", "sentence2"], [(f"p{i}", a, b) for i, (a, b) in enumerate(PAIRS)],
                 "\t")
    _write_table(files["csv"], ["id", "text_a", "text_b"], [(f"p{i}", a, b) for i, (a, b) in enumerate(PAIRS)], ",")
    objects = [{"id": f"p{i}", "premise": a, "hypothesis": b} for i, (a, b) in enumerate(PAIRS)]
    files["jsonl"].write_text("".join(json.dumps(o) + "\n" for o in objects))
    files["json"].write_text(json.dumps(objects))
    results = {}
    for fmt, path in files.items():
        status, records, err = _run(capsys, "-q", "--model", folders["pair"], "--input", path)
        assert status == 0, err
        results[fmt] = records
    status, records, err = _run(capsys, "-q", "--model", folders["pair"], "--input", "-",
                                stdin="".join(f"{a} ||| {b}\n" for a, b in PAIRS), monkeypatch=monkeypatch)
    assert status == 0, err
    assert [r["id"] for r in records] == [str(i) for i in range(1, len(PAIRS) + 1)]  # the line numbers
    results["lines"] = [{**r, "id": f"p{int(r['id']) - 1}"} for r in records]
    first = results["tsv"]
    assert [r["id"] for r in first] == [f"p{i}" for i in range(len(PAIRS))]
    assert [(r["text_a"], r["text_b"]) for r in first] == PAIRS  # the texts echoed
    for record in first:
        assert set(record["probabilities"]) == {"no", "maybe", "yes"}
        assert abs(sum(record["probabilities"].values()) - 1) < 1e-5
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
    assert len({r["label"] for r in first}) > 1  # the tiny model does tell inputs apart
    for fmt, records in results.items():
        assert records == first, fmt


def test_single_texts_regression_and_multi_label(tmp_path, folders, capsys):
    path = tmp_path / "in.tsv"
    _write_table(path, ["sentence", "label"], [(s, "0") for s in SENTENCES], "\t")
    status, records, _ = _run(capsys, "-q", "--model", folders["regression"], "--input", path)
    assert status == 0 and [set(r) for r in records] == [{"id", "text", "score"}] * len(SENTENCES)
    assert [r["text"] for r in records] == SENTENCES and [r["id"] for r in records] == [str(i) for i in range(2, 10)]
    assert len({r["score"] for r in records}) == len(SENTENCES)
    for threshold in ("0.5", "0.0", "1.0"):
        status, records, _ = _run(capsys, "-q", "--model", folders["multi"], "--input", path, "--threshold", threshold)
        assert status == 0
        for r in records:
            assert r["labels"] == [name for name, p in r["probabilities"].items() if p > float(threshold)]
            assert 0 < sum(r["probabilities"].values()) < 3  # sigmoids, not a softmax
        if threshold == "0.0":
            assert all(r["labels"] == ["animals", "places", "colours"] for r in records)
        if threshold == "1.0":
            assert all(r["labels"] == [] for r in records)


def test_questions_n_best_and_null_answers(tmp_path, folders, capsys):
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": CONTEXT, "qas": [{"id": "q1", "question": "who ran ?", "answers": []},
                                     {"id": "q2", "question": "where is the house ?", "answers": []}]},
        {"context": SENTENCES[3], "qas": [{"id": "q3", "question": "what was big ?", "answers": []}]}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(squad))
    status, records, err = _run(capsys, "-q", "--model", folders["qa"], "--input", tmp_path / "dev.json",
                                "--n-best", "3")
    assert status == 0, err
    assert [r["id"] for r in records] == ["q1", "q2", "q3"] and records[2]["context"] == SENTENCES[3]
    for r in records:
        assert r["answer"] and r["answer"] in r["context"] and len(r["n_best"]) == 3
        assert r["n_best"][0] == {"text": r["answer"], "score": r["score"]}
        assert "null_odds" not in r
    rows = [{"id": "a", "question": "who ran ?", "context": CONTEXT}, {"id": "b", "question": "what ?",
                                                                       "context": "the cat"}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = {}
    for threshold in ("-1000", "1000"):  # v2: "" when null score - best score exceeds the threshold
        status, records, err = _run(capsys, "-q", "--model", folders["qa2"], "--input", tmp_path / "qa.jsonl",
                                    "--null-threshold", threshold)
        assert status == 0, err
        answers[threshold] = [r["answer"] for r in records]
        assert all(isinstance(r["null_odds"], float) for r in records)
    assert answers["-1000"] == ["", ""] and all(answers["1000"])


def test_multiple_choice_from_a_json_list_endings_and_lines(tmp_path, folders, capsys, monkeypatch):
    rows = [("c1", SENTENCES[0], ["ran", "sat on the mat", "jumped over the moon"]),
            ("c2", SENTENCES[3], ["yes", "no", "the big red car"])]
    _write_table(tmp_path / "mc.csv", ["id", "context", "choices"], [(i, c, json.dumps(ch)) for i, c, ch in rows], ",")
    _write_table(tmp_path / "swag.tsv", ["id", "startphrase", "ending0", "ending1", "ending2"],
                 [(i, c, *ch) for i, c, ch in rows], "\t")
    outputs = []
    for path in (tmp_path / "mc.csv", tmp_path / "swag.tsv"):
        status, records, err = _run(capsys, "-q", "--model", folders["mc"], "--input", path)
        assert status == 0, err
        outputs.append(records)
    status, records, err = _run(capsys, "-q", "--model", folders["mc"], "--input", "-", monkeypatch=monkeypatch,
                                stdin="".join(f"{c} ||| {' ||| '.join(ch)}\n" for _, c, ch in rows))
    assert status == 0, err
    outputs.append([{**r, "id": rows[int(r["id"]) - 1][0]} for r in records])
    for records in outputs:
        assert records == outputs[0]
    for r, (_, context, choices) in zip(outputs[0], rows):
        assert r["context"] == context and r["choices"] == choices and len(r["probabilities"]) == 3
        assert r["choice"] == {"index": r["probabilities"].index(max(r["probabilities"])),
                               "text": choices[r["choice"]["index"]]}


def test_output_file_is_written_whole_and_the_bar_stays_off_stdout(tmp_path, folders, capsys):
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    status, records, err = _run(capsys, "--model", folders["regression"], "--input", tmp_path / "in.txt",
                                "--output", tmp_path / "out.jsonl", "--batch-size", "2")
    assert status == 0 and records == []  # nothing on stdout
    assert "predict" in err and "8/8" in err  # the progress bar goes to stderr
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in written] == SENTENCES
    status, records, err = _run(capsys, "--model", folders["regression"], "--input", tmp_path / "in.txt")
    assert status == 0 and [r["score"] for r in records] == pytest.approx([r["score"] for r in written], abs=1e-5)
    assert "predict" in err  # the bar on stderr while the records stream to stdout


def test_a_folder_without_metadata_needs_task(tmp_path, folders, capsys, minilm_dir):
    (tmp_path / "in.txt").write_text("hello world\n")
    status, records, err = _run(capsys, "--model", minilm_dir, "--input", tmp_path / "in.txt",
                                "--output", tmp_path / "out.jsonl")
    assert status == 1 and err.count("\n") == 1 and "no task entry" in err and "--task" in err
    status, records, err = _run(capsys, "--model", minilm_dir, "--input", tmp_path / "in.txt", "--task", "sst2",
                                "--output", tmp_path / "out.jsonl")
    assert status == 1 and err.count("\n") == 1 and "is not in the weights" in err and "fine-tune it" in err
    assert not (tmp_path / "out.jsonl").exists()


BAD_INPUTS = [
    ("in.tsv", "id\tsentence1\tsentence2\n1\ta\tb\tc\n", "pair", "in.tsv:2: 4 fields, but the header"),
    ("in.tsv", "id\tlabel\n1\t0\n", "pair", "in.tsv:1: no column for the text; expected one of 'text'"),
    ("in.csv", "id,text\n1,the cat\n2,\n", "pair", "in.csv:3: column 'text' is empty"),
    ("in.jsonl", '{"text": "a"}\n{"text": "b",}\n', "pair", "in.jsonl:2:14: not valid JSON"),
    ("in.json", '[{"text": "a"},\n {"text": "b"}\n,]', "pair", "in.json:3:2: not valid JSON"),
    ("in.json", "[" * 100_000, "pair", "in.json: not valid JSON (nested too deeply)"),
    ("in.jsonl", '{"text": "a"}\n["b"]\n', "pair", "in.jsonl:2: expected a JSON object, got list"),
    ("in.jsonl", '{"text": "a"}\n{"sentence": "b"}\n', "pair", "in.jsonl:2: no column 'text' in this row"),
    ("in.jsonl", '{"text": "a"}\n{"text": 3.5}\n{"text": ["x"]}\n', "pair", "in.jsonl:3: column 'text' holds list"),
    ("in.txt", "a ||| b\n\nc\n", "pair", "in.txt:2: empty line"),
    ("in.txt", "a ||| b ||| c\n", "pair", "in.txt:1: expected 'text' or 'text_a ||| text_b'"),
    ("in.txt", "", "pair", "in.txt: no inputs"),
    ("in.txt", b"caf\xe9\n", "pair", "in.txt:1: not UTF-8 text"),
    ("in.jsonl", '{"question": "who?"}\n', "qa", "no column for the context"),
    ("in.jsonl", '{"question": "who?", "context": "  "}\n', "qa", "in.jsonl:1: column 'context' is empty"),
    ("in.txt", "who ran ?\n", "qa", "in.txt:1: expected 'question ||| context'"),
    ("in.json", '{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "1"}]}]}]}', "qa", "no question text"),
    ("in.json", '{"data": 3}', "qa", "expected a list of objects or SQuAD's"),
    ("in.json", '{"data": []}', "pair", "this model is not for QA"),
    ("in.jsonl", '{"context": "c", "choices": ["a", "b", "c"]}\n{"context": "c", "choices": ["a", "b"]}\n', "mc",
     "in.jsonl:2: column 'choices' has 2 choices, expected 3"),
    ("in.csv", 'context,choices\nc,"[""a"", ""b"", ""c"""\n', "mc", "in.csv:2: column 'choices' is not a JSON list"),
    ("in.csv", 'context,choices\nc,"[""a"", """", ""c""]"\n', "mc", "in.csv:2: column 'choices': choice 1 is empty"),
    ("in.txt", "c ||| a ||| b ||| c ||| d\n", "mc", "in.txt:1: 4 choices, expected 3"),
    ("in.tsv", "startphrase\tending0\tending1\tending2\nc\ta\t\tb\n", "mc", "in.tsv:2: column 'ending1' is empty"),
]


@pytest.mark.parametrize("name, content, model, expected", BAD_INPUTS, ids=[b[3][:40] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_1_and_no_output(tmp_path, folders, capsys, name, content, model, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    out = tmp_path / "out.jsonl"
    status, _, err = _run(capsys, "--model", folders[model], "--input", path, "--output", out)
    assert status == 1 and err.count("\n") == 1 and err.startswith("bert predict: error: "), err
    assert expected in err, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [name]  # no output, no temporaries


@pytest.mark.parametrize("args, expected", [
    (["--input", "missing.txt"], "missing.txt: input file not found"),
    (["--input", "in.txt", "--output", "."], "is a folder"),
    (["--input", "in.txt", "--output", "in.txt"], "is the input file"),
    (["--input", "in.txt", "--n-best", "-1"], "--n-best must be 0 or more"),
    (["--input", "in.txt", "--threshold", "1.5"], "threshold must be a probability"),
    (["--input", "in.txt", "--window-combine", "max"], "--window-combine needs windows"),
    (["--input", "in.txt", "--no-window", "--window-stride", "8"], "--no-window contradicts"),
    (["--input", "in.txt", "--max-seq-length", "100"], "exceeds the model's max_position_embeddings"),
    (["--input", "in.txt", "--task", "qa"], "--task qa contradicts"),
])
def test_bad_flags_are_one_line(tmp_path, folders, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("the cat\n")
    status, records, err = _run(capsys, "--model", folders["pair"], *args)
    assert status == 1 and err.count("\n") == 1 and expected in err, err
    assert records == [] and (tmp_path / "in.txt").read_text() == "the cat\n"
