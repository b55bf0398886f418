"""GLUE: the real files parse with their documented counts; features match HF's tokenizer."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from bert.tasks import glue
from bert.tasks.records import CachedTokenizer
from bert.tasks.registry import TASKS, TaskKind, get_task

FIXTURES = Path(__file__).parent / "fixtures" / "glue"
# SOURCES.md folder name -> task
FOLDER_TASK = {"MRPC": "mrpc", "CoLA": "cola", "SST-2": "sst2", "STS-B": "stsb", "RTE": "rte", "WNLI": "wnli",
               "QNLI": "qnli"}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from bert.tokenization import BertTokenizer

    return BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast(str(minilm_dir / "vocab.txt"), do_lower_case=True)


def _documented_counts(shared_data: Path) -> dict[str, int]:
    """file -> data rows, from the table in SOURCES.md (e.g. "| `glue/MRPC/dev.tsv` | ... | 408 rows + header |")."""
    counts = {}
    for line in (shared_data / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(glue/[^`]+\.tsv)` \|.*\| (\d+) rows", line)
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_every_glue_file_parses_with_its_documented_row_count(shared_data):
    counts = _documented_counts(shared_data)
    assert len(counts) == 14, counts  # the table lists 14 GLUE files
    on_disk = {str(p.relative_to(shared_data)) for p in (shared_data / "glue").rglob("*.tsv")}
    assert on_disk == set(counts)
    for rel, expected in sorted(counts.items()):
        _, folder, name = rel.split("/")
        processor = get_task(FOLDER_TASK[folder]).processor
        split = name.removesuffix(".tsv")
        examples = processor.get_examples(shared_data / "glue" / folder, split)
        print(f"{rel}: {len(examples)} examples")
        assert len(examples) == expected, rel
        assert all(e.text_a for e in examples), rel
        assert all((e.text_b is None) == (processor.labeled.text_b is None) for e in examples), rel
        assert all((e.label is None) == (split == "test") for e in examples), rel
        assert len({e.guid for e in examples}) == len(examples), f"{rel}: duplicate guids"


def test_label_balances_match_the_sources_notes(shared_data):
    # SOURCES.md: "MRPC train 2474 pos/1194 neg; dev 279/129", "CoLA dev 721/322, SST-2 dev 444/428,
    # RTE dev 146/131, WNLI dev 40/31".
    expected = {
        ("MRPC", "train"): {"1": 2474, "0": 1194},
        ("MRPC", "dev"): {"1": 279, "0": 129},
        ("CoLA", "dev"): {"1": 721, "0": 322},
        ("SST-2", "dev"): {"1": 444, "0": 428},
        ("RTE", "dev"): {"entailment": 146, "not_entailment": 131},
        ("WNLI", "dev"): {"0": 40, "1": 31},
    }
    for (folder, split), balance in expected.items():
        examples = get_task(FOLDER_TASK[folder]).processor.get_examples(shared_data / "glue" / folder, split)
        assert Counter(e.label for e in examples) == balance, (folder, split)


def test_real_file_quirks(shared_data):
    g = shared_data / "glue"
    mrpc = glue.MRPC.get_examples(g / "MRPC", "dev")
    # the byte-order mark and the header are not data; quotes are text (QUOTE_NONE)
    assert mrpc[0].label == "1" and mrpc[0].text_b.startswith('"The foodservice pie business')
    assert mrpc[0].guid == "dev-0"
    test = glue.MRPC.get_examples(g / "MRPC", "test")
    assert [e.index for e in test[:3]] == ["0", "1", "2"] and test[0].label is None
    # CoLA has no header, and its dev file no final newline: first and last rows are both data
    cola = glue.COLA.get_examples(g / "CoLA", "dev")
    raw = (g / "CoLA" / "dev.tsv").read_text(encoding="utf-8")
    assert not raw.endswith("\n")
    assert cola[0].text_a == raw.split("\n")[0].split("\t")[3]
    assert cola[-1].text_a == raw.split("\n")[-1].split("\t")[3]
    # STS-B scores stay strings until featurised; the guid carries the file's index column
    stsb = glue.STSB.get_examples(g / "STS-B", "dev")
    assert stsb[0].label == "5.000" and stsb[0].guid == "dev-0"
    # the same rows as a plain csv reader with QUOTE_NONE finds (a second reading of the file)
    with open(g / "QNLI" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    qnli = glue.QNLI.get_examples(g / "QNLI", "dev")
    assert [(e.index, e.text_a, e.text_b, e.label) for e in qnli] == [tuple(r) for r in rows]


def test_fixture_tasks_mnli_qqp_ax_and_every_test_layout():
    mnli = glue.MNLI.get_examples(FIXTURES / "MNLI", "train")
    assert [e.label for e in mnli] == ["entailment", "contradiction", "neutral"]
    assert mnli[1].text_a == 'The shop closes at "noon" on Sundays.'  # quotes are text
    dev_m = glue.MNLI.get_examples(FIXTURES / "MNLI", "dev")
    dev_mm = glue.MNLI_MM.get_examples(FIXTURES / "MNLI", "dev")
    assert [e.label for e in dev_m] == ["neutral", "entailment"]  # gold_label, not label1
    assert [e.text_a for e in dev_mm] == ["The letter arrived on Monday."]
    assert glue.MNLI_MM.get_examples(FIXTURES / "MNLI", "test")[0].text_b == "Nobody tends the garden."
    qqp = glue.QQP.get_examples(FIXTURES / "QQP", "train")
    assert [(e.guid, e.label) for e in qqp] == [("train-11", "1"), ("train-12", "0")]
    assert glue.QQP.get_examples(FIXTURES / "QQP", "test")[1].text_b == "How do I tie a tie?"
    ax = glue.AX.get_examples(FIXTURES / "diagnostic", "test")
    assert [(e.index, e.label) for e in ax] == [("0", None), ("1", None)]
    with pytest.raises(ValueError, match="no dev split"):
        glue.AX.get_examples(FIXTURES / "diagnostic", "dev")
    for folder, task in [("CoLA", "cola"), ("SST-2", "sst2"), ("STS-B", "stsb"), ("QNLI", "qnli"),
                         ("RTE", "rte"), ("WNLI", "wnli")]:  # fmt: skip
        examples = get_task(task).processor.get_examples(FIXTURES / folder, "test")
        assert examples and all(e.label is None and e.guid.startswith("test-") for e in examples), task
    assert glue.COLA.get_examples(FIXTURES / "CoLA", "test")[1].text_a == "Her read book the."


def test_registry_table():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli",
                           "ax", "squad1", "squad2", "swag"]  # fmt: skip
    for name, spec in TASKS.items():
        assert spec.name == name
        if spec.kind in (TaskKind.SINGLE_CLASSIFICATION, TaskKind.PAIR_CLASSIFICATION):
            assert spec.num_labels == len(spec.labels)
            assert (spec.kind is TaskKind.PAIR_CLASSIFICATION) == (spec.processor.labeled.text_b is not None)
    assert (get_task("stsb").kind, get_task("stsb").num_labels) == (TaskKind.REGRESSION, 1)
    assert get_task("mnli").labels == ("contradiction", "entailment", "neutral") == get_task("ax").labels
    assert (get_task("swag").num_labels, get_task("squad2").num_labels) == (4, 2)
    with pytest.raises(ValueError, match="known tasks: cola, sst2"):
        get_task("mrcp")


def _google_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Google's longest-first rule in closed form: a shorter side that fits in half stays whole;
    otherwise both end at half the budget, the first sequence keeping the odd token."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if min(len_a, len_b) * 2 <= budget:
        return (len_a, budget - len_a) if len_a <= len_b else (budget - len_b, len_b)
    return (budget + 1) // 2, budget // 2


@pytest.mark.parametrize("folder", ["MRPC", "RTE", "STS-B", "WNLI", "CoLA", "SST-2", "QNLI"])
def test_features_match_hf_tokenizer(shared_data, tokenizer, hf_tokenizer, folder):
    task = get_task(FOLDER_TASK[folder])
    examples = task.processor.get_examples(shared_data / "glue" / folder, "dev")[:2000]  # (QNLI has 5463)
    cached = CachedTokenizer(tokenizer)  # each text tokenized once for both lengths
    pairs = examples[0].text_b is not None
    full_a = hf_tokenizer([e.text_a for e in examples], add_special_tokens=False)["input_ids"]
    full_b = hf_tokenizer([e.text_b for e in examples], add_special_tokens=False)["input_ids"] if pairs else None
    for max_len in (128, 24):
        features = glue.convert_examples_to_features(examples, task.labels, max_len, cached)
        hf = hf_tokenizer([e.text_a for e in examples], [e.text_b for e in examples] if pairs else None,
                          truncation="longest_first", max_length=max_len, add_special_tokens=True)  # fmt: skip
        truncated = 0
        for i, (e, f) in enumerate(zip(examples, features)):
            ids, types = hf["input_ids"][i], hf["token_type_ids"][i]
            assert len(f.input_ids) == len(f.segment_ids) <= max_len
            if not f.truncated:
                assert (f.input_ids, f.segment_ids) == (ids, types), e.guid
                continue
            truncated += 1
            # HF's Rust truncation gives the odd token to the second text; Google (and we) to the
            # first. Both keep prefixes of each text's tokens, so check those and Google's lengths.
            n_a = f.segment_ids.count(0) - 2
            assert f.input_ids[1 : 1 + n_a] == full_a[i][:n_a], e.guid
            if pairs:
                n_b = f.segment_ids.count(1) - 1
                assert f.input_ids[2 + n_a : -1] == full_b[i][:n_b], e.guid
                assert (n_a, n_b) == _google_lengths(len(full_a[i]), len(full_b[i]), max_len - 3), e.guid
            else:
                assert n_a == max_len - 2
        if task.labels is None:
            assert [f.label_id for f in features] == [float(e.label) for e in examples]
        else:
            assert [task.labels[f.label_id] for f in features] == [e.label for e in examples]
        print(f"{folder} dev, max_seq_length {max_len}: {truncated} of {len(features)} truncated")
        assert truncated > 0 or max_len == 128


def test_pair_truncation_literal():
    tokens, segments, truncated = glue.build_pair_input(list("abcdef"), list("xyz"), 8)
    # budget 5: pop from the longer (a) until a has 3, then B on ties: a=3, b=2
    assert tokens == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y", "[SEP]"] and truncated
    assert segments == [0, 0, 0, 0, 0, 1, 1, 1]
    tokens, segments, truncated = glue.build_pair_input(["a", "b"], None, 3)
    assert tokens == ["[CLS]", "a", "[SEP]"] and truncated
    with pytest.raises(ValueError, match="at least 4"):
        glue.convert_examples_to_features([], None, 3, None)


def test_submission_files(shared_data, tmp_path):
    test = glue.MRPC.get_examples(shared_data / "glue" / "MRPC", "test")
    preds = [i % 2 for i in range(len(test))]
    path = glue.write_submission(glue.MRPC, test, preds, tmp_path)
    assert path.name == "MRPC.tsv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "prediction"] and len(rows) == 1 + len(test)
    assert rows[1:4] == [["0", "0"], ["1", "1"], ["2", "0"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MRPC.tsv"]  # no temporary left behind

    ax = glue.AX.get_examples(FIXTURES / "diagnostic", "test")
    text = glue.write_submission(glue.AX, ax, [2, 0], tmp_path).read_text()
    assert text == "index\tprediction\n0\tneutral\n1\tcontradiction\n"
    stsb = glue.STSB.get_examples(FIXTURES / "STS-B", "test")
    assert glue.write_submission(glue.STSB, stsb, [3.25], tmp_path).read_text().splitlines()[1] == "0\t3.250"
    # scores outside STS-B's 0-5 scale are clipped, as the GLUE baselines write them
    assert glue.write_submission(glue.STSB, stsb, [5.7], tmp_path).read_text().splitlines()[1] == "0\t5.000"
    assert glue.write_submission(glue.STSB, stsb, [-0.2], tmp_path).read_text().splitlines()[1] == "0\t0.000"
    names = {TASKS[n].processor.submission_name for n in TASKS if n not in ("squad1", "squad2", "swag")}
    assert names == {"CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                     "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"}  # fmt: skip
    with pytest.raises(ValueError, match="out of range"):
        glue.write_submission(glue.AX, ax, [3, 0], tmp_path)
    with pytest.raises(ValueError, match="2 examples but 1 predictions"):
        glue.write_submission(glue.AX, ax, [1], tmp_path)
