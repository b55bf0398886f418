"""Bad data files through every reader and through the stages that read them.

Each bad file must give a DataFormatError (a ValueError) whose one line names the file and the line
(or the question id / article) and what was expected; through ``python -m stages.tokenize`` the stage
exits 1 with that one line and leaves no output (not even the split it had finished). Very long lines
under the csv field limit are read whole; over it, they are a clear error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bert.tasks import glue, squad, swag
from bert.tasks.records import DataFormatError
from reliability_helpers import (BAD_INPUT, SMALL_DATA, assert_one_clear_error, assert_stage_failed, run_python,
                                 snapshot, tally, write_params)

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
ROW = "1\t11\t12\tThe cat sat on the mat.\tA cat was sitting on the mat.\n"
LONG = "word " * 40_000  # 200 000 characters: over the csv module's 131 072-character field limit
# Invalid UTF-8 in many shapes: latin-1 accents, a lone continuation byte, a truncated sequence.
GARBAGE = bytes(range(256)) * 4

# case -> (file bytes, fragments the error line must hold). "{f}" is the file's name.
GLUE_CASES = {
    "missing-column": (MRPC_HEADER + ROW + "1\t13\t14\tonly one sentence\n", ["{f}:3", "expected 5", "found 4"]),
    "extra-column": (MRPC_HEADER + "1\t1\t2\ta\tb\tc\n", ["{f}:2", "expected 5", "found 6"]),
    "label-outside-set": (MRPC_HEADER + "7\t1\t2\ta\tb\n", ["{f}:2", "label '7'", "['0', '1']"]),
    "latin-1-bytes": ((MRPC_HEADER + ROW).encode() + "1\t3\t4\tcaf\xe9\tna\xefve\n".encode("latin-1"),
                      ["{f}:3", "not UTF-8"]),
    "utf-16": ((MRPC_HEADER + ROW).encode("utf-16"), ["{f}:1", "not UTF-8"]),
    "binary-garbage": (GARBAGE, ["{f}", "not UTF-8"]),
    "empty-file": (b"", ["{f}", "empty file"]),
    "blank-lines-only": ("\n\n   \n\t\n", ["{f}", "empty file"]),
    "header-too-short": ("a\tb\n" + "x\ty\n", ["{f}:1", "needs at least"]),
    "overlong-field": (MRPC_HEADER + f"1\t1\t2\t{LONG}\tb\n", ["{f}:2", "field limit"]),
}

SWAG_HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
SWAG_ROW = "0,v1,5,He rides. He,He rides.,He,gold,stops.,falls.,waves.,sings.,2\n"
SWAG_CASES = {
    "three-endings": (SWAG_HEADER + SWAG_ROW + "1,v2,6,A b. C,A b.,C,gold,x.,y.,z.,1\n", ["{f}:3", "expected 12"]),
    "header-lacks-ending3": (SWAG_HEADER.replace(",ending3", "") + "0,v,1,a,a,b,gold,x,y,z,1\n",
                             ["{f}:1", "ending3"]),
    "label-outside-set": (SWAG_HEADER + SWAG_ROW.replace(",2\n", ",4\n"), ["{f}:2", "label '4'"]),
    "label-not-a-number": (SWAG_HEADER + SWAG_ROW.replace(",2\n", ",two\n"), ["{f}:2", "label 'two'"]),
    "unterminated-quote": (SWAG_HEADER + '0,v1,5,"He rides. He,He rides.,He,gold,stops.,falls.,waves.,sings.,2\n',
                           ["{f}:2", "expected 12"]),
    "latin-1-bytes": (SWAG_HEADER.encode() + SWAG_ROW.replace("rides", "r\xe9des").encode("latin-1"),
                      ["{f}:2", "not UTF-8"]),
    "empty-file": (b"", ["{f}", "empty file"]),
    "overlong-field": (SWAG_HEADER + f"0,v1,5,x,{LONG},He,gold,a,b,c,d,1\n", ["{f}:2", "field limit"]),
}


def _qa(qid="q1", text="cat", start=4, **extra):
    return {"id": qid, "question": "Who sat?", "answers": [{"text": text, "answer_start": start}], **extra}


def _squad(*qas, context="The cat sat on the mat."):
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": list(qas)}]}]})


SQUAD_CASES = {
    "truncated-json": (_squad(_qa())[:60], ["{f}:1:", "not valid JSON"]),
    "empty-file": (b"", ["{f}:1:1", "not valid JSON"]),
    "top-level-list": ("[]", ["{f}", "'data' list"]),
    "article-without-paragraphs": ('{"data": [{"title": "x"}]}', ["{f}", "article 0", "'paragraphs'"]),
    "context-not-text": (_squad(_qa(), context=["a"]).replace('"context": ["a"]', '"context": 5'),
                         ["{f}", "'context' should be str"]),
    "answer-past-the-context": (_squad(_qa(start=400)), ["{f}", "question q1", "does not fit"]),
    "negative-answer-start": (_squad(_qa(start=-3)), ["{f}", "question q1", "does not fit"]),
    "float-answer-start": (_squad(_qa(start=4.0)), ["{f}", "question q1", "'answer_start' should be int"]),
    "empty-answer-text": (_squad(_qa(text="")), ["{f}", "question q1", "does not fit"]),
    "question-without-id": (_squad({"question": "x?", "answers": []}), ["{f}", "missing key 'id'"]),
    "latin-1-bytes": (_squad(_qa()).replace("mat", "m\xe2t").encode("latin-1"), ["{f}:1", "not UTF-8"]),
}


def _write(path: Path, content) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _check(err: Exception, path: Path, fragments) -> None:
    message = str(err)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment.format(f=path.name) in message, (fragment, message)


@pytest.mark.parametrize("case", sorted(GLUE_CASES))
def test_glue_reader(tmp_path, case):
    with tally(BAD_INPUT, f"glue tsv: {case}"):
        content, fragments = GLUE_CASES[case]
        path = _write(tmp_path / "dev.tsv", content)
        with pytest.raises(DataFormatError) as info:
            glue.MRPC.read(path, "dev")
        _check(info.value, path, fragments)


@pytest.mark.parametrize("processor, row, fragments", [
    (glue.STSB, "0\tg\tf\t2015\t0001\tnone\tnone\tA man.\tA man.\tabout 3\n", ["dev.tsv:2", "'about 3' is not a number"]),
    (glue.COLA, "gj04\t1\tThe sailors rode the breeze clear of the rocks.\n", ["dev.tsv:1", "expected 4"]),
    (glue.MNLI, "0\t1\t2\t3\t4\t5\t6\t7\tA\tB\tmaybe\n", ["dev_matched.tsv:2", "label 'maybe'"]),
    *[(glue.STSB, f"0\tg\tf\t2015\t0001\tnone\tnone\tA man.\tA man.\t{score}\n",
       ["dev.tsv:2", f"score '{score}' is not a finite number"]) for score in ("nan", "inf", "-Infinity", "1e400")],
], ids=["stsb-score-not-a-number", "cola-three-fields", "mnli-unknown-label", "stsb-score-nan", "stsb-score-inf",
        "stsb-score--Infinity", "stsb-score-1e400"])
def test_glue_task_specific_rows(tmp_path, processor, row, fragments):
    """[#19 H3] Rows valid as TSV but not for their task: STS-B scores nan, inf, -Infinity, 1e400 are refused naming
    file:line."""
    with tally(BAD_INPUT, f"glue tsv: {processor.name} {fragments[1]}"):
        header = {"stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n",
                  "mnli": "\t".join(f"c{i}" for i in range(11)) + "\n"}.get(processor.name, "")
        path = _write(tmp_path / processor.files["dev"], header + row)
        with pytest.raises(DataFormatError) as info:
            processor.read(path, "dev")
        _check(info.value, path, fragments)


@pytest.mark.parametrize("case", sorted(SWAG_CASES))
def test_swag_reader(tmp_path, case):
    with tally(BAD_INPUT, f"swag csv: {case}"):
        content, fragments = SWAG_CASES[case]
        path = _write(tmp_path / "val.csv", content)
        with pytest.raises(DataFormatError) as info:
            swag.read_swag_examples(path, is_training=True)
        _check(info.value, path, fragments)


@pytest.mark.parametrize("case", sorted(SQUAD_CASES))
def test_squad_reader(tmp_path, case):
    with tally(BAD_INPUT, f"squad json: {case}"):
        content, fragments = SQUAD_CASES[case]
        path = _write(tmp_path / "dev-v1.1.json", content)
        for training in (True, False):
            with pytest.raises(DataFormatError) as info:
                squad.read_squad_examples(path, is_training=training)
            _check(info.value, path, fragments)


def test_squad_v2_is_impossible_must_be_a_bool(tmp_path):
    with tally(BAD_INPUT, "squad json: is_impossible not a bool"):
        path = _write(tmp_path / "dev-v2.0.json", _squad(_qa(is_impossible="no")))
        with pytest.raises(DataFormatError) as info:
            squad.read_squad_examples(path, is_training=False, version_2_with_negative=True)
        _check(info.value, path, ["{f}", "question q1", "'is_impossible' should be bool"])


def test_squad_repeated_question_id(tmp_path):
    with tally(BAD_INPUT, "squad json: repeated question id"):
        path = _write(tmp_path / "dev-v1.1.json", _squad(_qa("q1"), _qa("q1", start=0, text="The")))
        with pytest.raises(DataFormatError) as info:
            squad.read_squad_examples(path, is_training=False)
        _check(info.value, path, ["{f}", "q1"])


def test_squad_deeply_nested_json(tmp_path):
    with tally(BAD_INPUT, "squad json: 100 000 nested brackets"):
        path = _write(tmp_path / "dev-v1.1.json", "[" * 100_000 + "]" * 100_000)
        with pytest.raises(DataFormatError) as info:
            squad.read_squad_examples(path, is_training=False)
        _check(info.value, path, ["{f}"])


def test_long_lines_under_the_limit_are_read_whole(tmp_path):
    with tally(BAD_INPUT, "very long lines (100k-char fields, 1M-char context) read whole"):
        text = "token " * 20_000  # 120 000 characters: under the limit
        path = _write(tmp_path / "dev.tsv", MRPC_HEADER + f"1\t1\t2\t{text}\tshort\n")
        (example,) = glue.MRPC.read(path, "dev")
        assert example.text_a == text and example.text_b == "short"
        path = _write(tmp_path / "val.csv", SWAG_HEADER + f"0,v,1,x,{text},He,gold,a,b,c,d,1\n")
        (mc,) = swag.read_swag_examples(path, is_training=True)
        assert mc.context_sentence == text and mc.endings == ("a", "b", "c", "d")
        context = "filler " * 150_000 + "The cat sat."
        start = context.index("cat")
        path = _write(tmp_path / "dev-v1.1.json", _squad(_qa(start=start), context=context))
        (qa,) = squad.read_squad_examples(path, is_training=True)
        assert qa.doc_tokens[qa.start_position] == "cat" and len(qa.doc_tokens) == 150_003


# ----------------------------------------------------------------------------------------------
# Through the tokenize stage: one line, exit 1, and no output at all.

STAGE_CASES = [  # (demo task, file to corrupt, case name in the tables above)
    ("demo-pair", "dev.tsv", GLUE_CASES, "missing-column"),
    ("demo-pair", "dev.tsv", GLUE_CASES, "latin-1-bytes"),
    ("demo-pair", "dev.tsv", GLUE_CASES, "empty-file"),
    ("demo-pair", "dev.tsv", GLUE_CASES, "overlong-field"),
    ("demo-pair", "train.tsv", GLUE_CASES, "label-outside-set"),
    ("demo-qa", "dev-v1.1.json", SQUAD_CASES, "truncated-json"),
    ("demo-qa", "dev-v1.1.json", SQUAD_CASES, "latin-1-bytes"),
    ("demo-qa", "train-v1.1.json", SQUAD_CASES, "answer-past-the-context"),
    ("demo-mc", "val.csv", SWAG_CASES, "three-endings"),
    ("demo-mc", "val.csv", SWAG_CASES, "latin-1-bytes"),
    ("demo-mc", "val.csv", SWAG_CASES, "empty-file"),
]


@pytest.fixture(scope="module")
def raw_data(tmp_path_factory):
    """The three demo tasks' raw folders, small (made by the download stage)."""
    from stages import download

    root = tmp_path_factory.mktemp("raw")
    params = write_params(root / "params.yaml", **SMALL_DATA)
    for task in ("demo-pair", "demo-qa", "demo-mc"):
        assert download.main(["--params", str(params), "--task", task, "--out", str(root / task)]) == 0
    return root


@pytest.mark.parametrize("task, name, table, case", STAGE_CASES,
                         ids=[f"{t}-{n}-{c}" for t, n, _, c in STAGE_CASES])
def test_tokenize_stage_refuses_bad_raw_files(tmp_path, raw_data, minilm_dir, caplog, task, name, table, case):
    from stages import tokenize

    with tally(BAD_INPUT, f"tokenize stage: {task} {name} {case}"):
        data = shutil.copytree(raw_data / task, tmp_path / "raw")
        content, fragments = table[case]
        _write(data / name, content)
        out_parent = tmp_path / "features"
        out_parent.mkdir()
        rc = tokenize.main(["--params", str(raw_data / "params.yaml"), "--task", task, "--data", str(data),
                            "--model", str(minilm_dir), "--out", str(out_parent / task)])
        message = assert_stage_failed(rc, caplog, *[f.format(f=name) for f in fragments])
        assert str(data / name) in message
        assert snapshot(out_parent) == {}, "partial output (or a temp folder) left behind"


def test_tokenize_stage_command_line(tmp_path, raw_data, minilm_dir):
    """The real ``python -m stages.tokenize``: exit 1, one line, no traceback, no output."""
    with tally(BAD_INPUT, "python -m stages.tokenize: truncated SQuAD JSON"):
        data = shutil.copytree(raw_data / "demo-qa", tmp_path / "raw")
        _write(data / "dev-v1.1.json", SQUAD_CASES["truncated-json"][0])
        proc = run_python(["-m", "stages.tokenize", "--params", str(raw_data / "params.yaml"), "--task", "demo-qa",
                           "--data", str(data), "--model", str(minilm_dir), "--out", str(tmp_path / "out" / "f")])
        assert_one_clear_error(proc.returncode, proc.stderr, "dev-v1.1.json:1:", "not valid JSON")
        assert not (tmp_path / "out").exists() or snapshot(tmp_path / "out") == {}


# ----------------------------------------------------------------------------------------------
# The pre-training corpus and the extract-features input.


def _instances_params():
    from stages.pretrain_data import InstancesParams

    return InstancesParams(max_seq_length=32, short_seq_prob=0.1, masked_lm_prob=0.15, max_predictions_per_seq=5,
                           dupe_factor=1, whole_word_mask=False, do_lower_case=True, random_seed=1, dev_documents=1)


@pytest.mark.parametrize("case, content, fragments", [
    ("latin-1-bytes", "A first line.\nCaf\xe9 au lait.\n".encode("latin-1"), ["corpus.txt", "not UTF-8"]),
    ("empty-file", b"", ["corpus.txt", "0 non-empty documents"]),
    ("blank-lines-only", b"\n\n\n", ["corpus.txt", "0 non-empty documents"]),
    ("one-document", b"Only one document.\nWith two lines.\n", ["corpus.txt", "1 non-empty documents"]),
])
def test_pretraining_corpus(tmp_path, minilm_dir, case, content, fragments):
    from stages.pretrain_data import build_instances

    with tally(BAD_INPUT, f"pre-training corpus: {case}"):
        (tmp_path / "corpus").mkdir()
        _write(tmp_path / "corpus" / "corpus.txt", content)
        with pytest.raises(ValueError) as info:
            build_instances(_instances_params(), tmp_path / "corpus", minilm_dir, tmp_path / "out")
        _check(info.value, tmp_path / "corpus.txt", fragments)
        assert not (tmp_path / "out").exists()


def test_pretraining_corpus_long_line(tmp_path, minilm_dir):
    from stages.pretrain_data import build_instances

    with tally(BAD_INPUT, "pre-training corpus: a 300 000-character line"):
        (tmp_path / "corpus").mkdir()
        text = "A short document.\n\n" + "many words in a row " * 15_000 + "\n\nThe last document.\n"
        _write(tmp_path / "corpus" / "corpus.txt", text)
        manifests = build_instances(_instances_params(), tmp_path / "corpus", minilm_dir, tmp_path / "out")
        assert manifests["train"].num_examples == 2 and manifests["train"].num_features > 0


@pytest.mark.parametrize("case, content, fragments", [
    ("latin-1-bytes", "hello world\nna\xefve ||| b\n".encode("latin-1"), ["in.txt", "line 2", "not UTF-8"]),
    ("empty-file", b"", ["in.txt", "no lines"]),
])
def test_extract_features_input(tmp_path, capsys, minilm_dir, case, content, fragments):
    from bert.cli.commands import main

    with tally(BAD_INPUT, f"bert extract-features input: {case}"):
        _write(tmp_path / "in.txt", content)
        rc = main(["extract-features", "-q", "--input-file", str(tmp_path / "in.txt"),
                   "--output-file", str(tmp_path / "out.jsonl"), "--model", str(minilm_dir)])
        assert_one_clear_error(rc, capsys.readouterr().err, *fragments)
        assert not (tmp_path / "out.jsonl").exists()
