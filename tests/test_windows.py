"""Windowed classification (bert/tasks/windows.py): long texts cut into windows with a stride, every token covered,
an input that fits unchanged, and each example's logits combined over its windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert.tasks.glue import build_pair_input, convert_examples_to_features
from bert.tasks.records import InputExample
from bert.tasks.windows import WindowSettings, combine_windows, convert_examples_to_windows, pair_windows
from bert.tokenization import BertTokenizer


def _tokens(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_the_docstring_example():
    windows = pair_windows(_tokens(9), None, 6, 2)
    assert [tokens for tokens, _ in windows] == [
        ["[CLS]", "t0", "t1", "t2", "t3", "[SEP]"], ["[CLS]", "t2", "t3", "t4", "t5", "[SEP]"],
        ["[CLS]", "t4", "t5", "t6", "t7", "[SEP]"], ["[CLS]", "t6", "t7", "t8", "[SEP]"]]
    assert all(segments == [0] * len(tokens) for tokens, segments in windows)


@pytest.mark.parametrize("len_a, len_b", [(5, None), (14, None), (3, 4), (10, 15), (4, 4)])
def test_an_input_that_fits_gives_exactly_the_unwindowed_features(len_a, len_b):
    a, b = _tokens(len_a, "a"), None if len_b is None else _tokens(len_b, "b")
    assert pair_windows(a, b, 32, 8) == [build_pair_input(a, b, 32)[:2]]


def test_windows_equal_glue_features_for_short_examples(minilm_dir):
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    examples = [InputExample("dev-0", "Is this Jacksonville?", "No it is not.", "1"),
                InputExample("dev-1", "A short sentence.", None, "0")]
    plain = convert_examples_to_features(examples, ["0", "1"], 128, tokenizer)
    windows = convert_examples_to_windows(examples, ["0", "1"], 128, 32, tokenizer)
    assert [(w.input_ids, w.segment_ids, w.label_id) for w in windows] == \
        [(f.input_ids, f.segment_ids, f.label_id) for f in plain]
    assert [(w.example_index, w.window_index, w.truncated) for w in windows] == [(0, 0, False), (1, 0, False)]


@pytest.mark.parametrize("n, max_seq_length, stride", [(100, 16, 5), (37, 10, 8), (50, 12, 30), (11, 12, 1)])
def test_single_text_windows_cover_every_token_in_order(n, max_seq_length, stride):
    text = _tokens(n)
    windows = pair_windows(text, None, max_seq_length, stride)
    seen = []
    for i, (tokens, _) in enumerate(windows):
        assert len(tokens) <= max_seq_length and tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        body = tokens[1:-1]
        start = text.index(body[0])
        assert body == text[start:start + len(body)]  # a contiguous piece of the text
        if i:
            assert start == seen[-1] + min(stride, max_seq_length - 2)  # advanced by the stride (at most a window)
        seen.append(start)
    covered = set()
    for tokens, _ in windows:
        covered.update(tokens[1:-1])
    assert covered == set(text) and windows[-1][0][-2] == text[-1]


def test_a_pair_keeps_the_shorter_text_and_windows_the_longer():
    question, passage = _tokens(5, "q"), _tokens(60, "p")
    windows = pair_windows(question, passage, 24, 8)
    assert len(windows) > 1
    covered = set()
    for tokens, segments in windows:
        assert len(tokens) <= 24
        assert tokens[:7] == ["[CLS]", *question, "[SEP]"]  # the question, whole, first in every window
        assert segments == [0] * 7 + [1] * (len(tokens) - 7)
        covered.update(tokens[7:-1])
    assert covered == set(passage)
    # the longer text first: it is windowed in its place, the shorter kept after it
    for tokens, _ in pair_windows(passage, question, 24, 8):
        assert tokens[-7:] == ["[SEP]", *question, "[SEP]"]
    # a long "short" text is cut to half the budget so that the windowed one keeps room
    long_a, longer_b = _tokens(40, "a"), _tokens(50, "b")
    for tokens, _ in pair_windows(long_a, longer_b, 24, 8):
        assert tokens[1:11] == long_a[:10] and tokens[11] == "[SEP]"


def test_training_windows_repeat_the_label():
    class Words:  # a tokenizer whose tokens are the words
        def tokenize(self, text):
            return text.split()

        def convert_tokens_to_ids(self, tokens):
            return [len(t) for t in tokens]

    examples = [InputExample("0", " ".join(_tokens(30)), None, "pos"), InputExample("1", "t0 t1", None, "neg"),
                InputExample("2", " ".join(_tokens(25)), None, ["pos", "neg"])]
    windows = convert_examples_to_windows(examples, ["neg", "pos"], 12, 5, Words())
    by_example = {}
    for w in windows:
        by_example.setdefault(w.example_index, []).append(w)
    assert [len(by_example[i]) for i in range(3)] == [5, 1, 4]
    assert {w.label_id for w in by_example[0]} == {1} and by_example[1][0].label_id == 0
    assert all(w.label_id == [1.0, 1.0] for w in by_example[2])  # multi-label: a multi-hot row
    assert [w.window_index for w in by_example[0]] == list(range(5)) and all(w.truncated for w in by_example[0])
    regression = convert_examples_to_windows([InputExample("0", "t0 t1", None, "3.5")], None, 12, 5, Words())
    assert regression[0].label_id == 3.5


def test_combine_mean_and_max():
    logits = np.array([[1.0, 2.0], [3.0, -4.0], [5.0, 0.0], [-1.0, 7.0]], dtype=np.float32)
    index = [0, 0, 1, 0]
    np.testing.assert_allclose(combine_windows(logits, index, 2, "mean"), [[1.0, 5 / 3], [5.0, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(combine_windows(logits, index, 2, "max"), [[3.0, 7.0], [5.0, 0.0]])
    np.testing.assert_array_equal(combine_windows(torch.tensor([0.5, 1.5, 2.0]), [0, 0, 1]), [1.0, 2.0])  # [W]
    with pytest.raises(ValueError, match="without a window: \\[1\\]"):
        combine_windows(logits, [0, 0, 2, 2], 3)
    with pytest.raises(ValueError, match="combine must be one of mean, max"):
        combine_windows(logits, index, 2, "median")
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        WindowSettings(0)
