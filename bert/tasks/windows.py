"""Long texts in classification: windows of max_seq_length tokens advanced by a stride (as SQuAD's doc_stride),
and each example's logits combined over its windows.

    text of 9 tokens, max_seq_length 6 (4 text tokens a window), stride 2:
    window 0: [CLS] t0 t1 t2 t3 [SEP]
    window 1: [CLS] t2 t3 t4 t5 [SEP]
    window 2: [CLS] t4 t5 t6 t7 [SEP]
    window 3: [CLS] t6 t7 t8 [SEP]          (the last window ends with the text)

A pair keeps its shorter text whole (cut to half the budget at most) and windows the longer one, in the
pair's order: ``[CLS] question [SEP] window of the passage [SEP]``. An input that fits gets exactly
``glue.build_pair_input``'s single window. Training repeats an example's label on each of its windows;
evaluation and prediction combine the windows' logits per example (mean or max), then score or decode them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from bert.tasks.glue import build_pair_input
from bert.tasks.records import InputExample, InputFeatures, Label, Tokenizer
from bert.tasks.squad import doc_spans

COMBINE = ("mean", "max")


@dataclass(frozen=True)
class WindowSettings:
    """How long inputs are cut: windows advance by `stride` tokens; logits combine by "mean" or "max"."""

    stride: int
    combine: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"window stride must be a positive integer, got {self.stride!r}")
        if self.combine not in COMBINE:
            raise ValueError(f"window combine must be one of {', '.join(COMBINE)}, got {self.combine!r}")


@dataclass
class WindowFeatures(InputFeatures):
    """One window of an example: InputFeatures plus the example it belongs to and its place among the windows."""

    example_index: int = 0
    window_index: int = 0


def pair_windows(tokens_a: Sequence, tokens_b: Optional[Sequence], max_seq_length: int, stride: int
                 ) -> list[tuple[list, list[int]]]:
    """The windows of one text or pair, framed as model input.

    Args:
        tokens_a, tokens_b: token (or id) lists; tokens_b None for a single text.
        max_seq_length: the most tokens a window holds, [CLS] and [SEP]s included.
        stride: how far each window starts after the previous one.
    Returns:
        [(tokens, segment_ids)] in text order; one window, equal to build_pair_input's, when the input fits.
    """
    tokens, segments, truncated = build_pair_input(list(tokens_a), None if tokens_b is None else list(tokens_b),
                                                   max_seq_length)
    if not truncated:
        return [(tokens, segments)]
    if tokens_b is None:
        return [build_pair_input(tokens_a[s:s + n], None, max_seq_length)[:2]
                for s, n in doc_spans(len(tokens_a), max_seq_length - 2, stride)]
    long_is_b = len(tokens_b) >= len(tokens_a)
    long, short = (tokens_b, tokens_a) if long_is_b else (tokens_a, tokens_b)
    kept = list(short[: (max_seq_length - 3) // 2])  # the windowed text gets at least half of the budget
    room = max_seq_length - 3 - len(kept)
    out = []
    for s, n in doc_spans(len(long), room, stride):
        part = list(long[s:s + n])
        a, b = (kept, part) if long_is_b else (part, kept)
        out.append(build_pair_input(a, b, max_seq_length)[:2])
    return out


def _label_id(example: InputExample, label_map: Optional[dict[str, int]]) -> Optional[Label]:
    label = example.label
    if label is None:
        return None
    if label_map is None:
        return float(label)
    if isinstance(label, (list, tuple)):  # multi-label: the names present -> a multi-hot row
        unknown = [name for name in label if name not in label_map]
        if unknown:
            raise ValueError(f"example {example.guid}: labels {unknown} are not among {list(label_map)}")
        return [1.0 if name in label else 0.0 for name in label_map]  # type: ignore[return-value]
    if label not in label_map:
        raise ValueError(f"example {example.guid}: label {label!r} is not one of {list(label_map)}")
    return label_map[label]


def convert_examples_to_windows(examples: Sequence[InputExample], label_list: Optional[Sequence[str]],
                                max_seq_length: int, stride: int, tokenizer: Tokenizer) -> list[WindowFeatures]:
    """Tokenize examples into windows (one per example when it fits); each window carries the example's label.

    Args:
        examples: single texts or pairs (a multi-label example's label is a list of label names).
        label_list: the label names in id order, or None for regression (label -> float).
        max_seq_length: the most tokens per window, [CLS] and [SEP]s included.
        stride: the window advance in tokens (as SQuAD's doc_stride).
        tokenizer: a BertTokenizer, or anything with tokenize and convert_tokens_to_ids.
    Returns:
        The windows of all examples in order; ``example_index`` says whose, ``truncated`` is True on every
        window of an example that needed more than one.
    """
    if max_seq_length < 4:
        raise ValueError(f"max_seq_length must be at least 4 ([CLS] a [SEP] b [SEP] needs room), got {max_seq_length}")
    WindowSettings(stride)  # checks the stride
    label_map = {label: i for i, label in enumerate(label_list)} if label_list is not None else None
    features = []
    for index, example in enumerate(examples):
        label = _label_id(example, label_map)
        tokens_b = tokenizer.tokenize(example.text_b) if example.text_b is not None else None
        windows = pair_windows(tokenizer.tokenize(example.text_a), tokens_b, max_seq_length, stride)
        for w, (tokens, segments) in enumerate(windows):
            features.append(WindowFeatures(tokenizer.convert_tokens_to_ids(tokens), segments, label,
                                           truncated=len(windows) > 1, example_index=index, window_index=w))
    return features


def combine_windows(logits, example_index: Sequence[int], num_examples: Optional[int] = None,
                    how: str = "mean") -> np.ndarray:
    """Each example's logits from its windows' logits.

    Args:
        logits: [W, C] (or [W]) per window, a numpy array or a CPU tensor.
        example_index: [W] the example each window belongs to.
        num_examples: E (default: the largest index + 1); every example needs at least one window.
        how: "mean" (the windows' average) or "max" (per class, the largest).
    Returns:
        [E, C] (or [E]) float32 logits.
    """
    if how not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {how!r}")
    values = np.asarray(logits, dtype=np.float64)
    index = np.asarray(example_index, dtype=np.int64)
    if values.shape[:1] != index.shape:
        raise ValueError(f"{len(index)} example indexes for {values.shape[0]} windows")
    n = int(index.max()) + 1 if num_examples is None and index.size else int(num_examples or 0)
    counts = np.bincount(index, minlength=n)
    if len(counts) > n or (counts == 0).any():
        raise ValueError(f"windows must cover examples 0..{n - 1} exactly; "
                         f"without a window: {np.flatnonzero(counts == 0)[:5].tolist()}")
    if how == "mean":
        out = np.zeros((n, *values.shape[1:]))
        np.add.at(out, index, values)
        out /= counts.reshape(-1, *([1] * (values.ndim - 1)))
    else:
        out = np.full((n, *values.shape[1:]), -np.inf)
        np.maximum.at(out, index, values)
    return out.astype(np.float32)
