"""The model folder's task metadata (bert/tasks/folder.py): written into config.json as HF's keys and our task
entry, read back, loaded by HF transformers with the same labels; a folder without it is a one-line error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bert.tasks.folder import (
    MissingTaskMetadata,
    TaskMetadata,
    metadata_for_task,
    read_task_metadata,
    write_task_metadata,
)
from bert.tasks.registry import TaskKind, get_task
from bert.tasks.windows import WindowSettings
from predict_helpers import tiny_folder

transformers = pytest.importorskip("transformers")


def test_classification_folder_has_hf_keys_and_our_task_entry(tmp_path):
    window = WindowSettings(16, "max")
    folder = tiny_folder(tmp_path, TaskKind.PAIR_CLASSIFICATION, ("contradiction", "entailment", "neutral"),
                         max_seq_length=40, window=window)
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert config["label2id"] == {"contradiction": 0, "entailment": 1, "neutral": 2}
    assert config["problem_type"] == "single_label_classification"
    assert config["task"] == {"name": "tiny", "kind": "pair_classification", "max_seq_length": 40,
                              "window": {"stride": 16, "combine": "max"}}
    assert json.loads((folder / "tokenizer_config.json").read_text())["do_lower_case"] is True
    meta = read_task_metadata(folder)
    assert meta == TaskMetadata(TaskKind.PAIR_CLASSIFICATION, "tiny", ("contradiction", "entailment", "neutral"),
                                40, window)
    assert config["vocab_size"] == 53 and config["num_labels"] == 3  # the rest of config.json is kept


@pytest.mark.parametrize("kind, labels, problem_type", [
    (TaskKind.SINGLE_CLASSIFICATION, ("neg", "pos"), "single_label_classification"),
    (TaskKind.MULTI_LABEL_CLASSIFICATION, ("sports", "politics", "tech"), "multi_label_classification"),
    (TaskKind.REGRESSION, (), "regression"),
])
def test_hf_loads_the_classification_folder_with_the_same_labels(tmp_path, kind, labels, problem_type):
    from bert.modeling import BertForSequenceClassification

    folder = tiny_folder(tmp_path, kind, labels)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.problem_type == problem_type
    assert hf.config.num_labels == max(len(labels), 1)
    if labels:
        assert hf.config.id2label == dict(enumerate(labels))
        assert hf.config.label2id == {name: i for i, name in enumerate(labels)}
    ours = BertForSequenceClassification.from_pretrained(folder).eval()
    assert ours.config.problem_type == problem_type
    ids = torch.tensor([[2, 7, 8, 9, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        assert torch.allclose(hf(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask), atol=1e-5)


def test_hf_loads_the_qa_and_multiple_choice_folders(tmp_path):
    qa = tiny_folder(tmp_path, TaskKind.SQUAD, max_seq_length=48, doc_stride=16, max_query_length=12,
                     version_2_with_negative=True, null_score_diff_threshold=-1.5)
    assert isinstance(transformers.AutoModelForQuestionAnswering.from_pretrained(qa),
                      transformers.BertForQuestionAnswering)
    config = json.loads((qa / "config.json").read_text())
    assert "problem_type" not in config and "id2label" not in config
    assert config["task"] == {"name": "tiny", "kind": "squad", "max_seq_length": 48, "doc_stride": 16,
                              "max_query_length": 12, "version_2_with_negative": True, "max_answer_length": 30,
                              "null_score_diff_threshold": -1.5}
    mc = tiny_folder(tmp_path, TaskKind.MULTIPLE_CHOICE, num_choices=4)
    assert isinstance(transformers.AutoModelForMultipleChoice.from_pretrained(mc), transformers.BertForMultipleChoice)
    assert read_task_metadata(mc).num_choices == 4


def test_metadata_for_a_registry_task():
    meta = metadata_for_task(get_task("mnli"), 128, window=WindowSettings(64))
    assert meta.labels == ("contradiction", "entailment", "neutral")
    assert meta.problem_type == "single_label_classification"
    squad2 = metadata_for_task(get_task("squad2"), 384)
    assert (squad2.version_2_with_negative, squad2.doc_stride, squad2.max_query_length) == (True, 128, 64)
    assert metadata_for_task(get_task("swag"), 80).num_choices == 4
    assert metadata_for_task(get_task("stsb"), 128).problem_type == "regression"


def test_a_folder_without_metadata_is_one_line_saying_how_to_add_it(tmp_path, minilm_dir):
    with pytest.raises(MissingTaskMetadata) as err:
        read_task_metadata(minilm_dir)
    message = str(err.value)
    assert "\n" not in message and "config.json: no task entry" in message
    assert "--task" in message and "write_task_metadata" in message
    # --task states the kind; labels come from the registry's task, or from num_labels
    assert read_task_metadata(minilm_dir, "mrpc").labels == ("0", "1")
    assert read_task_metadata(minilm_dir, "squad2").version_2_with_negative
    assert read_task_metadata(minilm_dir, "qa").max_seq_length == 384
    with pytest.raises(ValueError, match="needs the label names"):
        read_task_metadata(minilm_dir, "single")
    with pytest.raises(ValueError, match="expected a kind"):
        read_task_metadata(minilm_dir, "sentiment")


def test_a_pytorch_pretrained_bert_folder_is_named_by_its_bert_config(tmp_path):
    (tmp_path / "bert_config.json").write_text(json.dumps({"vocab_size": 99, "hidden_size": 32}))
    with pytest.raises(MissingTaskMetadata, match="bert_config.json: no task entry"):
        read_task_metadata(tmp_path)
    assert read_task_metadata(tmp_path, "stsb").kind is TaskKind.REGRESSION


def test_an_hf_folder_with_id2label_reads_with_task(tmp_path):
    folder = tiny_folder(tmp_path, TaskKind.SINGLE_CLASSIFICATION, ("neg", "pos"))
    config = json.loads((folder / "config.json").read_text())
    del config["task"]
    (folder / "config.json").write_text(json.dumps(config))
    assert read_task_metadata(folder, "single").labels == ("neg", "pos")
    with pytest.raises(ValueError, match="contradicts"):  # a folder with the entry: --task may not change the kind
        read_task_metadata(tiny_folder(tmp_path, TaskKind.SQUAD), "single")


@pytest.mark.parametrize("entry, expected", [
    ({"kind": "sentiment"}, "kind 'sentiment' is not one of"),
    ({"name": "x"}, "no kind"),
    ({"kind": "squad", "doc_stride": 0}, "doc_stride must be a positive integer"),
    ({"kind": "regression", "window": {"stride": -1}}, "window stride must be a positive integer"),
    ({"kind": "regression", "window": {"stride": 8, "combine": "median"}}, "combine must be one of mean, max"),
    ({"kind": "regression", "colour": "red"}, "unknown key(s) colour"),
    ("pair", "task must be a JSON object"),
])
def test_a_bad_task_entry_names_the_file_and_the_key(tmp_path, entry, expected):
    folder = tiny_folder(tmp_path, TaskKind.REGRESSION)
    config = json.loads((folder / "config.json").read_text())
    config["task"] = entry
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        read_task_metadata(folder)
    assert str(folder / "config.json") in str(err.value) and expected in str(err.value)


def test_write_refuses_labels_that_do_not_match_the_head(tmp_path):
    folder = tiny_folder(tmp_path, TaskKind.SINGLE_CLASSIFICATION, ("a", "b"))
    before = (folder / "config.json").read_bytes()
    with pytest.raises(ValueError, match="num_labels is 2, but 3 label names"):
        write_task_metadata(folder, TaskMetadata(TaskKind.SINGLE_CLASSIFICATION, "x", ("a", "b", "c")))
    assert (folder / "config.json").read_bytes() == before
    with pytest.raises(ValueError, match="at least 2 label names"):
        TaskMetadata(TaskKind.SINGLE_CLASSIFICATION, "x", ("only",))
    with pytest.raises(ValueError, match="distinct"):
        TaskMetadata(TaskKind.MULTI_LABEL_CLASSIFICATION, "x", ("a", "a"))


def test_the_metadata_survives_loading_and_saving_again(tmp_path):
    from bert.modeling import BertForSequenceClassification

    folder = tiny_folder(tmp_path, TaskKind.MULTI_LABEL_CLASSIFICATION, ("x", "y", "z"))
    again = tmp_path / "again"
    BertForSequenceClassification.from_pretrained(folder).save_pretrained(again)
    shutil.copy(folder / "vocab.txt", again)
    assert read_task_metadata(again) == read_task_metadata(folder)
