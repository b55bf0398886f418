"""Pre-training instances (masked LM + next sentence) from plain text, as Google's create_pretraining_data.

Input: one sentence per line, a blank line between documents. Every random choice is drawn from
one ``random.Random(seed)`` in exactly the original's order, so a seed gives the original's instances:

    read + tokenize ─► drop empty documents ─► shuffle documents
      for each of dupe_factor passes, for each document:
        target length (short_seq_prob) ─► chunks of sentences ─► A | B (50% actual next, 50% a
        random span of another document; the unused sentences are put back) ─► truncate the pair
        ─► [CLS] A [SEP] B [SEP] ─► mask 15% (80% [MASK], 10% random word, 10% kept)
    ─► shuffle instances

    # tokens:            [CLS] the cat [MASK] on the mat [SEP] it was warm [SEP]
    # segment_ids:         0    0   0    0    0   0   0    0    1   1   1     1
    # masked_lm_labels:   -1   -1  -1   sat  -1  -1  -1   -1   -1  -1  -1    -1   (ids; -1: not predicted)
    # next_sentence_label: 0 (B is A's actual next; 1: B is a random span of another document)

Features are stored in bert.data.cache's folder format (see ``write_pretraining_cache``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, MutableSequence, Protocol, Sequence

import torch
from torch import Tensor

from bert.data.cache import (
    TENSORS,
    CachedFeatures,
    CacheManifest,
    add_packing,
    pad_batch,
    write_cache_folder,
)

logger = logging.getLogger(__name__)

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
IGNORE_INDEX = -1  # masked_lm_labels value of a position with nothing to predict (the original's)
MLM_LABELS = "masked_lm_labels"  # per-position labels, stored flat beside input_ids
NSP_LABEL = "next_sentence_label"  # per-instance: 0 = B is A's actual next, 1 = B is random


class RandomStream(Protocol):
    """The three methods of ``random.Random`` the algorithm draws from."""

    def random(self) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...


@dataclass
class TrainingInstance:
    """One sentence pair, masked. ``masked_lm_labels[k]`` is the original token at ``masked_lm_positions[k]``."""

    tokens: list[str]
    segment_ids: list[int]
    masked_lm_positions: list[int]
    masked_lm_labels: list[str]
    is_random_next: bool
    truncated: bool = False  # not in the original's record: truncate_seq_pair removed tokens


@dataclass(frozen=True)
class InstanceOptions:
    """The original's flags (same names, same defaults)."""

    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10
    do_whole_word_mask: bool = False

    def __post_init__(self) -> None:
        # 5: [CLS] a [SEP] b [SEP] with max_num_tokens >= 2, the lower bound of randint(2, max_num_tokens)
        checks = [
            ("max_seq_length", self.max_seq_length >= 5, "an integer >= 5"),
            ("short_seq_prob", 0.0 <= self.short_seq_prob <= 1.0, "in [0, 1]"),
            ("masked_lm_prob", 0.0 <= self.masked_lm_prob <= 1.0, "in [0, 1]"),
            ("max_predictions_per_seq", self.max_predictions_per_seq >= 1, "an integer >= 1"),
            ("dupe_factor", self.dupe_factor >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"InstanceOptions.{name} must be {expected}, got {getattr(self, name)!r}")


Document = list[list[str]]  # sentences of WordPiece tokens


def read_documents(lines_per_file: Iterable[Iterable[str]], tokenize: Callable[[str], list[str]]) -> list[Document]:
    """Split text into documents of tokenized sentences, as the original reads its input files.

    A blank line starts a new document; a line that tokenizes to nothing is dropped. As in the
    original, a file does not start a new document by itself: end files with a blank line.
    Empty documents are removed.

    Args:
        lines_per_file: for each input file, its lines.
        tokenize: text -> WordPiece tokens (BertTokenizer.tokenize).
    Returns:
        The documents, in input order (create_training_instances shuffles them).
    """
    documents: list[Document] = [[]]
    for lines in lines_per_file:
        for line in lines:
            line = line.strip()
            if not line:
                documents.append([])
                continue
            tokens = tokenize(line)
            if tokens:
                documents[-1].append(tokens)
    return [d for d in documents if d]


def create_training_instances(documents: Sequence[Document], vocab_words: Sequence[str],
                              options: InstanceOptions, rng: RandomStream,
                              progress: bool = False) -> list[TrainingInstance]:
    """All instances of a corpus: shuffle the documents, dupe_factor passes over them, shuffle the result.

    Args:
        documents: from read_documents (not modified; a shuffled copy is used).
        vocab_words: the vocab's tokens in id order (random replacements are drawn from it).
        options: the InstanceOptions.
        rng: random.Random(seed), the single stream every choice is drawn from.
        progress: show a tqdm bar over the passes.
    Returns:
        The instances, shuffled.
    """
    all_documents = [d for d in documents if d]
    rng.shuffle(all_documents)
    instances: list[TrainingInstance] = []
    from tqdm.auto import tqdm

    for _ in tqdm(range(options.dupe_factor), desc="instances", unit="pass", disable=not progress):
        for document_index in range(len(all_documents)):
            instances.extend(create_instances_from_document(
                all_documents, document_index, options.max_seq_length, options.short_seq_prob,
                options.masked_lm_prob, options.max_predictions_per_seq, vocab_words, rng,
                options.do_whole_word_mask))
    rng.shuffle(instances)
    return instances


def create_instances_from_document(all_documents: Sequence[Document], document_index: int, max_seq_length: int,
                                   short_seq_prob: float, masked_lm_prob: float, max_predictions_per_seq: int,
                                   vocab_words: Sequence[str], rng: RandomStream,
                                   do_whole_word_mask: bool = False) -> list[TrainingInstance]:
    """The instances of one document (one pass).

    Args:
        all_documents: every document (random next segments come from the others).
        document_index: the document to cut into instances.
        max_seq_length, short_seq_prob, masked_lm_prob, max_predictions_per_seq, do_whole_word_mask:
            as InstanceOptions.
        vocab_words: the vocab's tokens in id order.
        rng: the random stream.
    Returns:
        The document's instances, in order.
    """
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]

    # Usually fill the whole sequence; sometimes (short_seq_prob) aim shorter, to look more like
    # fine-tuning inputs. A target, not a limit: max_num_tokens is the limit.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    # Segments A and B are cut at real sentence boundaries (an arbitrary split point would make
    # next sentence prediction too easy).
    instances = []
    current_chunk: list[list[str]] = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1  # how many sentences of the chunk go into A
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = [t for sentence in current_chunk[:a_end] for t in sentence]

                tokens_b: list[str] = []
                # rng.random() is not drawn for a one-sentence chunk: it must take a random next.
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    # Up to 10 tries for another document (with one document, it is this one).
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's sentences after A were not used: put them back.
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = [t for sentence in current_chunk[a_end:] for t in sentence]
                truncated = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                assert tokens_a and tokens_b, "a segment was truncated to nothing"

                tokens = [CLS, *tokens_a, SEP, *tokens_b, SEP]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, positions, labels = create_masked_lm_predictions(
                    tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng, do_whole_word_mask)
                instances.append(TrainingInstance(tokens, segment_ids, positions, labels, is_random_next, truncated))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_masked_lm_predictions(tokens: Sequence[str], masked_lm_prob: float, max_predictions_per_seq: int,
                                 vocab_words: Sequence[str], rng: RandomStream,
                                 do_whole_word_mask: bool = False) -> tuple[list[str], list[int], list[str]]:
    """Choose the positions to predict and corrupt them (80% [MASK], 10% random word, 10% kept).

    Args:
        tokens: [CLS] A [SEP] B [SEP] (never modified; [CLS] and [SEP] are never chosen).
        masked_lm_prob: fraction of the sequence's length to predict (rounded, at least 1).
        max_predictions_per_seq: the cap on predictions.
        vocab_words: the vocab's tokens in id order (random replacements).
        rng: the random stream.
        do_whole_word_mask: choose whole words: a `##` piece joins the preceding piece's word.
    Returns:
        (output tokens, positions in increasing order, the original tokens at those positions).
    """
    cand_indexes: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token == CLS or token == SEP:
            continue
        # Whole-word masking masks every piece of a word, but each piece is still predicted (and
        # corrupted 80/10/10) on its own.
        if do_whole_word_mask and cand_indexes and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)

    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked: list[tuple[int, str]] = []
    covered: set[int] = set()
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(index_set) > num_to_predict:
            continue  # a whole word that would exceed the budget is skipped, not cut
        if any(index in covered for index in index_set):
            continue
        for index in index_set:
            covered.add(index)
            if rng.random() < 0.8:
                masked_token = MASK
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked.append((index, tokens[index]))
    masked.sort(key=lambda pair: pair[0])
    return output_tokens, [p for p, _ in masked], [label for _, label in masked]


def truncate_seq_pair(tokens_a: list[str], tokens_b: list[str], max_num_tokens: int, rng: RandomStream) -> bool:
    """Trim the longer segment (B on a tie), from the front or the back at random, until the pair fits.

    Returns:
        True when anything was removed.
    """
    truncated = False
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        # Sometimes the front, sometimes the back: avoids a bias towards either end.
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()
        truncated = True
    return truncated


# ----------------------------------------------------------------------------------------------
# Features: bert.data.cache's folder format plus one flat per-position label tensor
#
#   features.safetensors  input_ids (int32), token_type_ids (uint8), offsets (int64, rows + 1),
#                         masked_lm_labels (int32, flat like input_ids: -1 where nothing is predicted),
#                         next_sentence_label (int64, one per instance)
#   manifest.json         a CacheManifest: label_keys ("next_sentence_label",), extra["sequence_label_keys"]
#
# bert.data.cache.CachedFeatures reads such a folder too (without the masked LM labels).


@dataclass
class PretrainingFeature:
    """An instance as ids: unpadded rows of equal length, and the next-sentence label."""

    input_ids: list[int]
    token_type_ids: list[int]
    masked_lm_labels: list[int]
    next_sentence_label: int


def instance_to_feature(instance: TrainingInstance, vocab: dict[str, int]) -> PretrainingFeature:
    """Map an instance's tokens to ids; masked LM labels per position (-1 where nothing is predicted).

    Raises:
        ValueError: a token is not in the vocab (the instances came from another vocab).
    """
    try:
        input_ids = [vocab[t] for t in instance.tokens]
        labels = [IGNORE_INDEX] * len(input_ids)
        for position, token in zip(instance.masked_lm_positions, instance.masked_lm_labels):
            labels[position] = vocab[token]
    except KeyError as err:
        raise ValueError(f"token {err.args[0]!r} is not in the vocab the instances are mapped with") from None
    return PretrainingFeature(input_ids, list(instance.segment_ids), labels, int(instance.is_random_next))


def write_pretraining_cache(folder: str | os.PathLike, features: Sequence[PretrainingFeature],
                            manifest: CacheManifest) -> Path:
    """Write features in bert.data.cache's folder format, atomically (a temp folder renamed into place).

    Args:
        folder: the split's folder.
        features: from instance_to_feature.
        manifest: its num_features must equal len(features) and its label_keys be (NSP_LABEL,).
    Returns:
        the folder.
    """
    if manifest.num_features != len(features) or tuple(manifest.label_keys) != (NSP_LABEL,):
        raise ValueError(f"{folder}: manifest says {manifest.num_features} features with labels "
                         f"{list(manifest.label_keys)}, got {len(features)} with [{NSP_LABEL!r}]")
    lengths = torch.tensor([len(f.input_ids) for f in features], dtype=torch.int64)
    offsets = torch.zeros(len(features) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)

    def flat(key: str, dtype: torch.dtype) -> Tensor:
        return torch.tensor([t for f in features for t in getattr(f, key)], dtype=dtype)

    tensors = {
        "input_ids": flat("input_ids", torch.int32),
        "token_type_ids": flat("token_type_ids", torch.uint8),
        MLM_LABELS: flat(MLM_LABELS, torch.int32),
        "offsets": offsets,
        NSP_LABEL: torch.tensor([f.next_sentence_label for f in features], dtype=torch.int64),
    }
    if not (len(tensors["token_type_ids"]) == len(tensors[MLM_LABELS]) == int(offsets[-1])):
        raise ValueError(f"{folder}: a feature's input_ids, token_type_ids and masked_lm_labels differ in length")
    return write_cache_folder(folder, tensors, manifest)


class PretrainingDataset(CachedFeatures):
    """A pre-training cache folder as a Dataset of BertForPreTraining kwargs.

    Item i: ``input_ids``, ``token_type_ids``, ``masked_lm_labels`` (1-D int64 at the true length)
    and ``next_sentence_label`` (0-d). ``lengths`` gives each item's length.
    """

    def __init__(self, folder: str | os.PathLike):
        from safetensors import safe_open

        super().__init__(folder)
        path = self.folder / TENSORS
        with safe_open(str(path), framework="pt") as f:
            if MLM_LABELS not in f.keys() or self.manifest.label_keys != (NSP_LABEL,):
                raise ValueError(f"{path}: not a pre-training cache (expected {MLM_LABELS} and {NSP_LABEL})")
            self._mlm = f.get_tensor(MLM_LABELS)
        if len(self._mlm) != len(self._ids):
            raise ValueError(f"{path}: {len(self._mlm)} {MLM_LABELS} for {len(self._ids)} input_ids")
        if len(self._mlm) and int(self._mlm.min()) < IGNORE_INDEX:
            raise ValueError(f"{path}: {MLM_LABELS} below {IGNORE_INDEX} (expected a token id, or {IGNORE_INDEX} "
                             "where there is nothing to predict)")

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = super().__getitem__(i)
        item[MLM_LABELS] = self._mlm[int(self._offsets[i]): int(self._offsets[i + 1])].long()
        return item


def pretraining_collate(items: Sequence[dict[str, Tensor]], pad_id: int = 0) -> dict[str, Tensor]:
    """pad_collate, with masked_lm_labels padded by -1 (padding is never predicted) and their positions in
    the packing.

    Args:
        items: PretrainingDataset items.
        pad_id: the id that fills input_ids.
    Returns:
        key -> batched tensor ([batch, longest] for sequences, [batch] for next_sentence_label).
    """
    rest = [{k: v for k, v in item.items() if k != MLM_LABELS} for item in items]
    batch = pad_batch(rest, pad_id)
    labels = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
    for b, item in enumerate(items):
        labels[b, : len(item[MLM_LABELS])] = item[MLM_LABELS]
    batch[MLM_LABELS] = labels
    return add_packing(batch, labels)
