"""SWAG: the swagaf CSV format and 4-choice features, checked against HF's tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bert.tasks import swag
from bert.tasks.registry import TaskKind, get_task

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "swag_train_sample.csv"
TEST = FIXTURES / "swag_test_sample.csv"


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from bert.tokenization import BertTokenizer

    return BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


def test_reads_the_swagaf_columns():
    examples = swag.read_swag_examples(TRAIN, is_training=True)
    assert [e.label for e in examples] == [0, 1, 2, 3]
    assert [e.swag_id for e in examples] == ["1001", "1002", "1003", "1004"]  # fold-ind, as run_swag.py
    chef = examples[1]
    # quoted fields keep their commas; doubled quotes are one quote
    assert chef.context_sentence == "The chef slices onions, then"
    assert chef.start_ending == "he"
    assert chef.endings == ("sings to the moon.", "drops them into a hot pan.", "drives a truck.",
                            'says "done" and leaves.')  # fmt: skip
    test = swag.read_swag_examples(TEST, is_training=False)
    assert [e.label for e in test] == [None, None] and test[1].start_ending == "The mailman"
    with pytest.raises(ValueError, match="header lacks the column.s. label"):
        swag.read_swag_examples(TEST, is_training=True)


def test_processor_and_registry(tmp_path):
    for split, name in swag.FILES.items():
        shutil.copy(TEST if split == "test" else TRAIN, tmp_path / name)
    spec = get_task("swag")
    assert spec.kind is TaskKind.MULTIPLE_CHOICE and spec.num_labels == swag.NUM_CHOICES == 4
    assert len(spec.processor.get_examples(tmp_path, "train")) == 4
    assert spec.processor.get_examples(tmp_path, "dev")[0].label == 0  # val.csv has labels
    assert spec.processor.get_examples(tmp_path, "test")[0].label is None
    with pytest.raises(ValueError, match="no 'validation' split"):
        spec.processor.get_examples(tmp_path, "validation")


def test_features_equal_hf_pair_encoding(tokenizer, minilm_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    examples = swag.read_swag_examples(TRAIN, is_training=True)
    features = swag.convert_examples_to_features(examples, tokenizer, max_seq_length=64)
    for example, feature in zip(examples, features):
        assert feature.example_id == example.swag_id and feature.label == example.label
        assert len(feature.choices) == 4
        for ending, choice in zip(example.endings, feature.choices):
            # [CLS] sent1 [SEP] sent2 + ending [SEP]
            expected = hf(example.context_sentence, f"{example.start_ending} {ending}")
            assert choice.input_ids == expected["input_ids"] and not choice.truncated
            assert choice.segment_ids == expected["token_type_ids"]


def test_truncation_keeps_both_sides_longest_first(tokenizer):
    examples = swag.read_swag_examples(TRAIN, is_training=True)
    features = swag.convert_examples_to_features(examples, tokenizer, max_seq_length=10)
    chef = features[1].choices[1]  # "the chef slices onions , then" | "he drops them into a hot pan ."
    # 6 + 8 tokens into 7: the longer loses one at a time (the second on ties) -> 4 + 3
    assert tokenizer.convert_ids_to_tokens(chef.input_ids) == [
        "[CLS]", "the", "chef", "slices", "onions", "[SEP]", "he", "drops", "them", "[SEP]"]  # fmt: skip
    assert chef.truncated and chef.segment_ids == [0] * 6 + [1] * 4
    assert all(len(c.input_ids) <= 10 for f in features for c in f.choices)
    with pytest.raises(ValueError, match="at least 4"):
        swag.convert_examples_to_features(examples, tokenizer, max_seq_length=3)
