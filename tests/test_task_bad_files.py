"""Bad task files: each is a clear error naming the file and line or id, or a counted, logged skip."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from bert.tasks import glue, squad, swag
from bert.tasks.records import DataFormatError

FIXTURES = Path(__file__).parent / "fixtures"
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_ROW = "1\t101\t102\tThe cat sat.\tA cat sat.\n"


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataFormatError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_tsv_row_with_a_missing_column(tmp_path):
    path = _write(tmp_path, "dev.tsv", MRPC_HEADER + MRPC_ROW + "0\t103\t104\tOnly one sentence.\n" + MRPC_ROW)
    msg = _error(glue.MRPC.read, path, "dev")
    assert msg == f"{path}:3: expected 5 tab-separated fields (as in the header), found 4"
    cola = _write(tmp_path, "cola.tsv", "gj04\t1\t\tFine.\ngj04\t0\tNo star here.\n")
    assert _error(glue.COLA.read, cola, "train") == f"{cola}:2: expected 4 tab-separated fields (for this task), found 3"


def test_label_outside_the_tasks_set(tmp_path):
    rte = _write(tmp_path, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tC.\tD.\tmaybe\n")
    msg = _error(glue.RTE.read, rte, "train")
    assert msg == f"{rte}:3: label 'maybe' is not one of the rte labels ['entailment', 'not_entailment']"
    sst = _write(tmp_path, "sst.tsv", "sentence\tlabel\ngood .\t1\nbad .\t2\n")
    assert f"{sst}:3: label '2'" in _error(glue.SST2.read, sst, "dev")
    stsb_header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    stsb = _write(tmp_path, "stsb.tsv", stsb_header + "0\tg\tf\t2012\t0\tn\tn\tA.\tB.\thigh\n")
    assert _error(glue.STSB.read, stsb, "dev") == f"{stsb}:2: score 'high' is not a number"


def test_undecodable_empty_and_misshapen_tsv_files(tmp_path):
    rows = MRPC_HEADER.lstrip("\ufeff") + MRPC_ROW + "1\t1\t2\tCaf\u00e9 au lait.\tA caf\u00e9.\n"
    latin = _write(tmp_path, "latin.tsv", rows, "latin-1")
    assert re.fullmatch(rf"{re.escape(str(latin))}:3: not UTF-8 text \(.*\)", _error(glue.MRPC.read, latin, "dev"))
    empty = _write(tmp_path, "empty.tsv", "")
    assert _error(glue.MRPC.read, empty, "dev") == f"{empty}: empty file, expected GLUE rows"
    assert _error(glue.COLA.read, empty, "train") == f"{empty}: empty file, expected GLUE rows"
    # an SST-2 file given to MRPC: two columns where MRPC needs five
    sst = _write(tmp_path, "sst.tsv", "sentence\tlabel\ngood .\t1\n")
    assert _error(glue.MRPC.read, sst, "dev") == f"{sst}:1: rows have 2 fields, but this task's layout needs at least 5"
    with pytest.raises(FileNotFoundError):
        glue.MRPC.get_examples(tmp_path / "nowhere", "dev")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        glue.MRPC.get_examples(tmp_path, "valid")


def _squad_file(tmp_path, qas, context="Marie Curie won the Nobel Prize in 1903 and again in 1911."):
    return _write(tmp_path, "squad.json", json.dumps({"version": "1.1", "data": [
        {"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))  # fmt: skip


def _q(qid, text, start):
    return {"id": qid, "question": "When?", "answers": [{"text": text, "answer_start": start}]}


def test_squad_answer_start_not_matching_the_text(tmp_path, caplog):
    context = "Marie Curie won the Nobel Prize in 1903 and again in 1911."
    qas = [
        _q("good", "1903", context.index("1903")),
        _q("shifted", "1903", context.index("1903") - 1),  # " 1903": the words still spell it: kept
        _q("elsewhere", "1903", context.index("Marie")),  # points at other words: unrecoverable
    ]
    path = _squad_file(tmp_path, qas)
    with caplog.at_level(logging.WARNING, logger="bert.tasks.squad"):
        train = squad.read_squad_examples(path, is_training=True)
    assert [e.qas_id for e in train] == ["good", "shifted"]
    assert f"{path}: skipped 1 of 3 training questions whose answer cannot be found" in caplog.text
    assert "elsewhere" in caplog.text and f"{path}: 2 answers are not at their answer_start" in caplog.text
    # evaluation reads the answers from the JSON itself: every question is kept, the mismatch logged
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bert.tasks.squad"):
        assert len(squad.read_squad_examples(path, is_training=False)) == 3
    assert "2 answers are not at their answer_start: shifted, elsewhere" in caplog.text


def test_squad_answers_outside_the_context_or_ill_typed(tmp_path):
    path = _squad_file(tmp_path, [_q("late", "1911.", 56)])
    msg = _error(squad.read_squad_examples, path, False)
    assert msg == f"{path}: question late: answer '1911.' at answer_start 56 does not fit in its context of 58 characters"
    path = _squad_file(tmp_path, [_q("str", "1903", "35")])
    assert _error(squad.read_squad_examples, path, False) == f"{path}: question str: 'answer_start' should be int, got str"
    path = _squad_file(tmp_path, [{"id": "noq", "answers": []}])
    assert _error(squad.read_squad_examples, path, False) == f"{path}: question noq: missing key 'question'"
    path = _squad_file(tmp_path, [{"id": "none", "question": "Who?", "answers": []}])
    msg = _error(squad.read_squad_examples, path, True)
    assert msg == f"{path}: question none: a training question needs an answer (for SQuAD 2.0 set version_2_with_negative)"
    path = _write(tmp_path, "nodata.json", json.dumps({"version": "1.1", "articles": []}))
    assert _error(squad.load_squad_json, path) == f"{path}: expected a JSON object with a 'data' list of articles"
    path = _write(tmp_path, "nocontext.json", json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    assert _error(squad.read_squad_examples, path, False) == (
        f"{path}: article 0 paragraph 0: missing key 'context'"
    )


def test_truncated_json(tmp_path):
    full = (FIXTURES / "squad_v2_sample.json").read_text(encoding="utf-8")
    path = _write(tmp_path, "cut.json", full[: len(full) // 2])
    msg = _error(squad.read_squad_examples, path, False, True)
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+: not valid JSON \(.+\)", msg), msg


def test_swag_row_with_three_endings(tmp_path):
    lines = (FIXTURES / "swag_train_sample.csv").read_text(encoding="utf-8").splitlines()
    # drop ending3 from the third data row: 11 fields where the header has 12
    fields = lines[3].split(",")
    lines[3] = ",".join(fields[:10] + fields[11:])
    path = _write(tmp_path, "train.csv", "\n".join(lines) + "\n")
    msg = _error(swag.read_swag_examples, path, True)
    assert msg == f"{path}:4: expected 12 comma-separated fields (as in the header: 4 endings), found 11"
    # a header with three endings
    header = lines[0].replace(",ending3", "")
    path = _write(tmp_path, "three.csv", header + "\n")
    assert _error(swag.read_swag_examples, path, True) == f"{path}:1: header lacks the column(s) ending3"
    lines = (FIXTURES / "swag_train_sample.csv").read_text(encoding="utf-8").splitlines()
    path = _write(tmp_path, "label.csv", "\n".join([*lines[:2], lines[2].rsplit(",", 1)[0] + ",4"]) + "\n")
    assert _error(swag.read_swag_examples, path, True) == f"{path}:3: label '4' is not one of 0, 1, 2, 3"
    empty = _write(tmp_path, "empty.csv", "")
    assert _error(swag.read_swag_examples, empty, False) == f"{empty}: empty file, expected the swagaf header line"
