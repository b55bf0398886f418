"""Stage tokenize: the fast id path equals the slow one; manifests record what made the features."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from bert.data.cache import CachedFeatures
from bert.tasks import glue, swag
from bert.tokenization import BertTokenizer
from stages import tokenize
from stages._lib.builtin_data import write_builtin
from stages._lib.tasks import get_task

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


def test_fast_ids_equal_slow_path_on_real_mrpc(tokenizer, shared_data):
    examples = glue.MRPC.get_examples(shared_data / "glue" / "MRPC", "dev")
    labels = glue.MRPC.labels
    for max_len in (128, 24):  # 24 truncates most pairs
        slow = glue.convert_examples_to_features(examples, labels, max_len, tokenizer)
        fast = glue.convert_examples_to_features(examples, labels, max_len, tokenize.FastIds(tokenizer))
        assert [(f.input_ids, f.segment_ids, f.label_id, f.truncated) for f in slow] == \
               [(f.input_ids, f.segment_ids, f.label_id, f.truncated) for f in fast]
    assert sum(f.truncated for f in fast) > 300


def test_fast_ids_equal_slow_path_on_swag_format(tokenizer, tmp_path):
    write_builtin("demo-mc", tmp_path, 50, 5, seed=1)
    examples = swag.read_swag_examples(tmp_path / "train.csv", is_training=True)
    for max_len in (64, 12):
        slow = swag.convert_examples_to_features(examples, tokenizer, max_len)
        fast = swag.convert_examples_to_features(examples, tokenize.FastIds(tokenizer), max_len)
        key = lambda fs: [[(c.input_ids, c.segment_ids, c.truncated) for c in f.choices] + [f.label] for f in fs]  # noqa
        assert key(slow) == key(fast)


def _params(tmp_path, **changes) -> Path:
    values = yaml.safe_load(REPO_PARAMS.read_text())
    values["tokenize"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("task", ["demo-pair", "demo-qa", "demo-mc"])
def test_stage_writes_train_and_dev_caches(tmp_path, minilm_dir, task):
    write_builtin(task, tmp_path / "raw", 30, 12, seed=0)
    params = _params(tmp_path, max_seq_length=24, doc_stride=8, max_query_length=6)
    out = tmp_path / "features"
    assert tokenize.main(["--task", task, "--data", str(tmp_path / "raw"), "--model", str(minilm_dir),
                          "--out", str(out), "--params", str(params)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dev", "train"]
    train, dev = CachedFeatures(out / "train"), CachedFeatures(out / "dev")
    m = train.manifest
    assert m.vocab_sha256 == hashlib.sha256((minilm_dir / "vocab.txt").read_bytes()).hexdigest()
    assert (m.task, m.split, m.max_seq_length, m.do_lower_case, m.num_examples) == (task, "train", 24, True, 30)
    assert dev.manifest.num_examples == 12
    assert max(train.lengths) <= 24 and m.num_truncated > 0  # 24 tokens cut every format
    if task == "demo-qa":
        assert (m.doc_stride, m.max_query_length) == (8, 6)
        assert len(train) > 30  # long contexts became several windows
        assert train.manifest.label_keys == ("start_positions", "end_positions")
        assert dev.manifest.label_keys == () and len(dev.metadata) == len(dev)
        assert {"tokens", "token_to_orig_map", "token_is_max_context"} <= set(dev.metadata[0])
    elif task == "demo-mc":
        assert m.num_choices == 4 and train[0]["input_ids"].shape[0] == 4
    else:
        assert m.extra["labels"] == ["0", "1"] and json.loads((out / "dev" / "manifest.json").read_text())


def test_stage_failure_leaves_no_output(tmp_path, minilm_dir, caplog):
    write_builtin("demo-pair", tmp_path / "raw", 10, 5, seed=0)
    with open(tmp_path / "raw" / "dev.tsv", "a") as f:
        f.write("2\t1\t2\tlabel two is not\tan MRPC label\n")
    out = tmp_path / "features"
    assert tokenize.main(["--task", "demo-pair", "--data", str(tmp_path / "raw"), "--model", str(minilm_dir),
                          "--out", str(out), "--params", str(_params(tmp_path))]) == 1
    assert "dev.tsv" in caplog.text
    # train was featurised before dev failed: neither it nor a temporary folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw"]


def test_missing_inputs_name_their_stage(tmp_path, minilm_dir, caplog):
    params = str(_params(tmp_path))
    assert tokenize.main(["--task", "demo-pair", "--data", str(tmp_path / "nope"), "--model", str(minilm_dir),
                          "--out", str(tmp_path / "f"), "--params", params]) == 1
    assert "missing raw data of demo-pair; it is produced by the download stage" in caplog.text
    write_builtin("demo-pair", tmp_path / "raw", 10, 5, seed=0)
    assert tokenize.main(["--task", "demo-pair", "--data", str(tmp_path / "raw"), "--model", str(tmp_path / "m"),
                          "--out", str(tmp_path / "f"), "--params", params]) == 1
    assert "produced by the convert stage" in caplog.text


def test_unknown_task_lists_the_known_ones(tmp_path, minilm_dir, caplog):
    assert tokenize.main(["--task", "mrcp", "--data", str(tmp_path), "--model", str(minilm_dir),
                          "--out", str(tmp_path / "f"), "--params", str(_params(tmp_path))]) == 1
    assert "unknown task 'mrcp'; known tasks: demo-pair, demo-qa, demo-mc, cola" in caplog.text
    assert get_task("demo-pair").name == "demo-pair"


def test_windows_on_real_mrpc_are_the_slow_paths(tmp_path, minilm_dir, tokenizer, shared_data):
    """tokenize.windows: each long pair becomes the windows bert.tasks.windows makes with BertTokenizer itself,
    each with its example's label and index; SQuAD and multiple choice keep their own inputs."""
    from bert.tasks.windows import convert_examples_to_windows

    data = shared_data / "glue" / "MRPC"
    params = _params(tmp_path, max_seq_length=32, windows={"stride": 8, "combine": "max"})
    out = tmp_path / "features"
    assert tokenize.main(["--task", "mrpc", "--data", str(data), "--model", str(minilm_dir), "--out", str(out),
                          "--params", str(params)]) == 0
    dev = CachedFeatures(out / "dev")
    examples = glue.MRPC.get_examples(data, "dev")
    slow = convert_examples_to_windows(examples, glue.MRPC.labels, 32, 8, tokenizer)
    assert len(dev) == len(slow) > 2 * len(examples) and dev.manifest.num_examples == len(examples) == 408
    assert dev.manifest.extra["window"] == {"stride": 8, "combine": "max"}
    assert dev.metadata["example_index"] == [w.example_index for w in slow]
    assert dev.metadata["ids"] == [examples[w.example_index].guid for w in slow]
    assert dev.labels("labels").tolist() == [w.label_id for w in slow]
    assert [dev[i]["input_ids"].tolist() for i in range(len(dev))] == [w.input_ids for w in slow]
    assert [dev[i]["token_type_ids"].tolist() for i in range(len(dev))] == [w.segment_ids for w in slow]
    assert dev.manifest.num_truncated == len({w.example_index for w in slow if w.truncated})
