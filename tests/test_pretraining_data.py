"""create_pretraining_data: a hand-traced literal run, the original's statistics, the cache round trip.

The literal tests drive the algorithm with a scripted random stream: every draw the original makes
(kind, arguments, order) is listed with the value it returns, and the expected instances were worked
out by hand from google-research/bert's create_pretraining_data.py, line by line (the trace is in
the comments).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from scipy.stats import binom

from bert.data.cache import CachedFeatures, CacheManifest
from bert.data.pretraining_data import (
    IGNORE_INDEX,
    InstanceOptions,
    PretrainingDataset,
    create_masked_lm_predictions,
    create_training_instances,
    instance_to_feature,
    pretraining_collate,
    read_documents,
    write_pretraining_cache,
)
from bert.tokenization import BertTokenizer

TINY_VOCAB = "[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat . dog run ##s a ran far on mat".split()
CORPUS = "\nThe cat sat.\nThe dog runs.\n\x00\nA cat ran far.\n\nDogs ran.\nThe cat sat on the mat.\n\n\n"


class ScriptedRandom:
    """Returns scripted values and checks that each draw is the scripted kind with the scripted arguments."""

    def __init__(self, script):
        self.script = list(script)
        self.position = 0

    def _next(self, kind, *args):
        assert self.position < len(self.script), f"draw {self.position}: {kind}{args} beyond the script"
        want = self.script[self.position]
        assert (want[0], want[1:-1]) == (kind, args), f"draw {self.position}: got {kind}{args}, scripted {want}"
        self.position += 1
        return want[-1]

    def random(self):
        return self._next("random")

    def randint(self, a, b):
        return self._next("randint", a, b)

    def shuffle(self, x):
        order = self._next("shuffle", len(x))
        x[:] = [x[k] for k in order]

    def done(self):
        return self.position == len(self.script)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> BertTokenizer:
    vocab = tmp_path_factory.mktemp("tiny") / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab, do_lower_case=True)


def test_read_documents_follows_the_original(tiny_tokenizer):
    docs = read_documents([CORPUS.splitlines()], tiny_tokenizer.tokenize)
    # blank lines split documents, empty ones vanish, a line that tokenizes to nothing ("\x00") is dropped
    assert docs == [
        [["the", "cat", "sat", "."], ["the", "dog", "run", "##s", "."], ["a", "cat", "ran", "far", "."]],
        [["dog", "##s", "ran", "."], ["the", "cat", "sat", "on", "the", "mat", "."]],
    ]
    # As the original: a new file does not start a new document (files should end with a blank line).
    assert read_documents([["the cat sat ."], ["dogs ran ."]], tiny_tokenizer.tokenize) == [
        [["the", "cat", "sat", "."], ["dog", "##s", "ran", "."]]]


# The whole trace. Documents after reading: A = [A1 the cat sat . | A2 the dog run ##s . | A3 a cat ran far .],
# B = [B1 dog ##s ran . | B2 the cat sat on the mat .]; max_seq_length 11 -> max_num_tokens 8;
# every sequence has 11 tokens -> num_to_predict = round(11 * 0.15) = 2; whole-word masking on.
SCRIPT = [
    ("shuffle", 2, [1, 0]),            # documents -> [B, A]
    # document 0 (B)
    ("random", 0.05),                  # < short_seq_prob 0.1: a short target
    ("randint", 2, 8, 3),              # target_seq_length 3
    # chunk [B1] (4 >= 3): one sentence, so A = B1 and B is random (no draw for the coin)
    ("randint", 0, 1, 0),              # random document 0 is this one: try again
    ("randint", 0, 1, 1),              # document 1 (A)
    ("randint", 0, 2, 2),              # start at A3: B = a cat ran far . (5 >= target_b_length -1)
    ("random", 0.3),                   # 4 + 5 > 8, B longer: < 0.5 deletes its front -> cat ran far .
    # [CLS] dog ##s ran . [SEP] cat ran far . [SEP]; candidates [1,2] [3] [4] [6] [7] [8] [9]
    ("shuffle", 7, [1, 0, 3, 2, 4, 5, 6]),  # -> [3] [1,2] [6] [4] ...
    ("random", 0.9), ("random", 0.2),  # position 3: not [MASK], kept (ran)
    # [1,2]: 1 + 2 > 2 predictions: skipped without a draw
    ("random", 0.1),                   # position 6: [MASK]; two predictions: stop
    # chunk [B2] (7 >= 3): A = B2, B random
    ("randint", 0, 1, 1),              # document 1 (A)
    ("randint", 0, 2, 0),              # B = A1 = the cat sat .
    ("random", 0.7),                   # 7 + 4 > 8, A longer: pop the back -> the cat sat on the mat
    ("random", 0.2),                   # 6 + 4 > 8: delete the front -> cat sat on the mat
    ("random", 0.6),                   # 5 + 4 > 8: pop the back -> cat sat on the
    # [CLS] cat sat on the [SEP] the cat sat . [SEP]; candidates [1] [2] [3] [4] [6] [7] [8] [9]
    ("shuffle", 8, [7, 2, 0, 1, 3, 4, 5, 6]),  # -> [9] [3] ...
    ("random", 0.85), ("random", 0.75), ("randint", 0, 16, 16),  # position 9: random word 16 = mat
    ("random", 0.5),                   # position 3: [MASK]
    # document 1 (A)
    ("random", 0.5),                   # >= 0.1: target_seq_length 8
    # chunk [A1 A2] (9 >= 8)
    ("randint", 1, 1, 1),              # a_end 1: A = A1
    ("random", 0.4),                   # < 0.5: random next (target_b_length 4)
    ("randint", 0, 1, 0),              # document 0 (B) is another one
    ("randint", 0, 1, 0),              # B = B1 (4 >= 4); A2 is put back (i -= 1); 8 tokens: no truncation
    # [CLS] the cat sat . [SEP] dog ##s ran . [SEP]; candidates [1] [2] [3] [4] [6,7] [8] [9]
    ("shuffle", 7, [4, 0, 1, 2, 3, 5, 6]),  # -> [6,7] ...
    ("random", 0.3),                   # position 6: [MASK]
    ("random", 0.95), ("random", 0.1),  # position 7: kept (##s)
    # chunk [A2 A3] (10 >= 8, and the last sentence)
    ("randint", 1, 1, 1),              # A = A2
    ("random", 0.6),                   # >= 0.5: actual next, B = A3
    ("random", 0.9),                   # 5 + 5 > 8, tie -> B: pop the back -> a cat ran far
    ("random", 0.1),                   # 5 + 4 > 8, A longer: delete the front -> dog run ##s .
    # [CLS] dog run ##s . [SEP] a cat ran far [SEP]; candidates [1] [2,3] [4] [6] [7] [8] [9]
    ("shuffle", 7, [1, 6, 0, 2, 3, 4, 5]),  # -> [2,3] ...
    ("random", 0.79),                  # position 2: [MASK]
    ("random", 0.81), ("random", 0.55), ("randint", 0, 16, 14),  # position 3: random word 14 = far
    ("shuffle", 4, [2, 0, 3, 1]),      # instances -> 3rd, 1st, 4th, 2nd
]

EXPECTED = [  # tokens, segment_ids, masked positions, labels, is_random_next
    ("[CLS] the cat sat . [SEP] [MASK] ##s ran . [SEP]", 6, [6, 7], ["dog", "##s"], True),
    ("[CLS] dog ##s ran . [SEP] [MASK] ran far . [SEP]", 6, [3, 6], ["ran", "cat"], True),
    ("[CLS] dog [MASK] far . [SEP] a cat ran far [SEP]", 6, [2, 3], ["run", "##s"], False),
    ("[CLS] cat sat [MASK] the [SEP] the cat sat mat [SEP]", 6, [3, 9], ["on", "."], True),
]
EXPECTED_IDS = [  # the same, as ids of TINY_VOCAB, labels per position
    ([2, 5, 6, 7, 8, 3, 4, 11, 13, 8, 3], {6: 9, 7: 11}, 1),
    ([2, 9, 11, 13, 8, 3, 4, 13, 14, 8, 3], {3: 13, 6: 6}, 1),
    ([2, 9, 4, 14, 8, 3, 12, 6, 13, 14, 3], {2: 10, 3: 11}, 0),
    ([2, 6, 7, 4, 5, 3, 5, 6, 7, 16, 3], {3: 15, 9: 8}, 1),
]


def test_instances_equal_the_hand_traced_algorithm(tiny_tokenizer):
    docs = read_documents([CORPUS.splitlines()], tiny_tokenizer.tokenize)
    rng = ScriptedRandom(SCRIPT)
    options = InstanceOptions(max_seq_length=11, short_seq_prob=0.1, masked_lm_prob=0.15,
                              max_predictions_per_seq=20, dupe_factor=1, do_whole_word_mask=True)
    instances = create_training_instances(docs, list(tiny_tokenizer.vocab), options, rng)
    assert rng.done(), f"only {rng.position} of {len(SCRIPT)} scripted draws were made"
    got = [(" ".join(i.tokens), i.segment_ids.count(0), i.masked_lm_positions, i.masked_lm_labels, i.is_random_next)
           for i in instances]
    assert got == EXPECTED
    for inst in instances:
        assert inst.segment_ids == [0] * 6 + [1] * 5
    assert [i.truncated for i in instances] == [False, True, True, True]
    for inst, (ids, labels, nsp) in zip(instances, EXPECTED_IDS):
        feature = instance_to_feature(inst, tiny_tokenizer.vocab)
        assert feature.input_ids == ids
        assert feature.masked_lm_labels == [labels.get(p, IGNORE_INDEX) for p in range(11)]
        assert feature.next_sentence_label == nsp


def test_whole_word_masking_skips_a_word_that_exceeds_the_budget():
    tokens = ["[CLS]", "dog", "##s", "ran", "[SEP]"]
    # num_to_predict = round(5 * 0.5) = round(2.5) = 2 (Python 3 rounds half to even)
    rng = ScriptedRandom([("shuffle", 3, [1, 2, 0]), ("random", 0.1), ("random", 0.2)])
    out = create_masked_lm_predictions(tokens, 0.5, 20, TINY_VOCAB, rng, do_whole_word_mask=False)
    assert rng.done() and out == (["[CLS]", "dog", "[MASK]", "[MASK]", "[SEP]"], [2, 3], ["##s", "ran"])
    # candidates [1,2] [3] -> [3] [1,2]: after ran, dog ##s would make 3 > 2: skipped, not cut
    rng = ScriptedRandom([("shuffle", 2, [1, 0]), ("random", 0.3)])
    out = create_masked_lm_predictions(tokens, 0.5, 20, TINY_VOCAB, rng, do_whole_word_mask=True)
    assert rng.done() and out == (["[CLS]", "dog", "##s", "[MASK]", "[SEP]"], [3], ["ran"])


# ----------------------------------------------------------------------------------------------
# Statistics on a generated corpus with the real (MiniLM, 30522-word) vocab


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_dir) -> BertTokenizer:
    return BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True)


@pytest.fixture(scope="module")
def corpus_docs(minilm_tokenizer):
    from stages.builtin_corpus import generate_corpus

    return read_documents([generate_corpus(240, seed=5).splitlines()], minilm_tokenizer.tokenize)


def make(docs, tokenizer, seed=12345, **kwargs):
    options = InstanceOptions(**{"max_seq_length": 64, "dupe_factor": 2, **kwargs})
    return create_training_instances(docs, list(tokenizer.vocab), options, random.Random(seed))


def bounds(n, p, alpha=1e-6):
    """Two-sided binomial interval: a count outside it has probability < alpha under Binomial(n, p)."""
    low, high = binom.interval(1 - alpha, n, p)
    return int(low), int(high)


def test_masking_rates_and_structure(corpus_docs, minilm_tokenizer):
    instances = make(corpus_docs, minilm_tokenizer)
    vocab_size = len(minilm_tokenizer.vocab)
    counts = Counter()
    total_tokens = total_predictions = 0
    for inst in instances:
        n = len(inst.tokens)
        assert n <= 64
        boundary = inst.segment_ids.index(1)
        # [CLS] A [SEP] B [SEP], segment ids 0 then 1, [CLS]/[SEP] never chosen for prediction
        assert inst.segment_ids == [0] * boundary + [1] * (n - boundary)
        assert inst.tokens[0] == "[CLS]" and inst.tokens[boundary - 1] == "[SEP]" and inst.tokens[-1] == "[SEP]"
        assert boundary >= 3 and n - boundary >= 2
        assert not {0, boundary - 1, n - 1} & set(inst.masked_lm_positions)
        assert "[CLS]" not in inst.masked_lm_labels and "[SEP]" not in inst.masked_lm_labels
        assert inst.masked_lm_positions == sorted(set(inst.masked_lm_positions))
        # exactly round(15% of the length) predictions (the cap of 20 is not reached at 64 tokens)
        assert len(inst.masked_lm_positions) == max(1, round(n * 0.15))
        total_tokens += n
        total_predictions += len(inst.masked_lm_positions)
        for pos, label in zip(inst.masked_lm_positions, inst.masked_lm_labels):
            shown = inst.tokens[pos]
            counts["mask" if shown == "[MASK]" else "same" if shown == label else "other"] += 1
    n = total_predictions
    assert len(instances) > 1500 and n > 15000
    # rounding moves each instance's count by at most 0.5 token
    assert abs(total_predictions - 0.15 * total_tokens) <= 0.5 * len(instances)
    assert abs(total_predictions / total_tokens - 0.15) < 0.005
    # What is observed at a predicted position: [MASK] with p 0.8 (+ 0.1/V when the random word is
    # [MASK]), the original with 0.1 (+ 0.1/V when the random word is the original), another token 0.1(1 - 2/V).
    expected = {"mask": 0.8 + 0.1 / vocab_size, "same": 0.1 + 0.1 / vocab_size, "other": 0.1 * (1 - 2 / vocab_size)}
    for key, p in expected.items():
        low, high = bounds(n, p)
        assert low <= counts[key] <= high, f"{key}: {counts[key]} of {n}, expected within [{low}, {high}] (p={p:.4f})"


def test_next_sentence_labels_are_balanced(corpus_docs, minilm_tokenizer):
    instances = make(corpus_docs, minilm_tokenizer, short_seq_prob=0.0)
    n = len(instances)
    random_next = sum(inst.is_random_next for inst in instances)
    # A chunk of one sentence must take a random next; with targets of 61 tokens and ~8-token
    # sentences that happens at most once per document pass (its last sentence): at most D instances.
    forced_max = len(corpus_docs) * 2
    low, _ = bounds(n - forced_max, 0.5)
    _, high = bounds(n, 0.5)
    assert low <= random_next <= high + forced_max, f"{random_next} random of {n}"
    assert 0.4 < random_next / n < 0.6


def test_max_predictions_and_short_sequences(corpus_docs, minilm_tokenizer):
    instances = make(corpus_docs, minilm_tokenizer, max_seq_length=128, max_predictions_per_seq=5,
                     short_seq_prob=0.5, dupe_factor=1)
    assert max(len(i.masked_lm_positions) for i in instances) == 5
    lengths = [len(i.tokens) for i in instances]
    assert max(lengths) <= 128
    # half the documents aim at a random target in [2, 125]: many sequences end far below the limit
    assert sum(length < 64 for length in lengths) > 0.2 * len(lengths)


def test_whole_word_masking_masks_every_piece(corpus_docs, minilm_tokenizer):
    instances = make(corpus_docs, minilm_tokenizer, do_whole_word_mask=True, dupe_factor=1)
    pieces = 0
    for inst in instances:
        chosen = set(inst.masked_lm_positions)
        assert len(chosen) <= max(1, round(len(inst.tokens) * 0.15))
        original = list(inst.tokens)
        for pos, label in zip(inst.masked_lm_positions, inst.masked_lm_labels):
            original[pos] = label
        for pos, token in enumerate(original):
            # a ## piece is predicted exactly when the piece before it is (same word)
            if token.startswith("##") and pos - 1 > 0:
                assert (pos in chosen) == (pos - 1 in chosen), (original, sorted(chosen))
                pieces += pos in chosen
    assert pieces > 20  # the corpus has split words (e.g. milk ##ed) and some were masked whole


def test_same_seed_same_instances(corpus_docs, minilm_tokenizer):
    docs = corpus_docs[:60]
    a, b = make(docs, minilm_tokenizer, seed=7), make(docs, minilm_tokenizer, seed=7)
    c = make(docs, minilm_tokenizer, seed=8)
    assert a == b
    assert a != c
    assert docs == corpus_docs[:60]  # the input documents are not modified


# ----------------------------------------------------------------------------------------------
# Cache round trip


def test_cache_round_trip_and_collate(tmp_path, tiny_tokenizer):
    docs = read_documents([CORPUS.splitlines()], tiny_tokenizer.tokenize)
    instances = create_training_instances(docs, list(tiny_tokenizer.vocab), InstanceOptions(
        max_seq_length=11, dupe_factor=3), random.Random(1))
    features = [instance_to_feature(i, tiny_tokenizer.vocab) for i in instances]
    manifest = CacheManifest(task="pretrain", split="train", vocab_sha256="x", do_lower_case=True,
                             max_seq_length=11, doc_stride=None, max_query_length=None, num_examples=2,
                             num_features=len(features), num_truncated=0, label_keys=("next_sentence_label",))
    folder = write_pretraining_cache(tmp_path / "train", features, manifest)
    data = PretrainingDataset(folder)
    assert len(data) == len(features) and data.lengths == [len(f.input_ids) for f in features]
    for k, f in enumerate(features):
        item = data[k]
        assert item["input_ids"].tolist() == f.input_ids
        assert item["token_type_ids"].tolist() == f.token_type_ids
        assert item["masked_lm_labels"].tolist() == f.masked_lm_labels
        assert int(item["next_sentence_label"]) == f.next_sentence_label
    # the pipeline's reader opens it too (without the per-position labels)
    plain = CachedFeatures(folder)
    assert plain[0]["input_ids"].tolist() == features[0].input_ids and "masked_lm_labels" not in plain[0]

    short = {"input_ids": torch.tensor([2, 5, 3, 6, 3]), "token_type_ids": torch.tensor([0, 0, 0, 1, 1]),
             "masked_lm_labels": torch.tensor([-1, 7, -1, -1, -1]), "next_sentence_label": torch.tensor(1)}
    batch = pretraining_collate([data[0], short])
    assert batch["input_ids"].shape == (2, 11)
    assert batch["masked_lm_labels"][1].tolist() == [-1, 7] + [-1] * 9
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 6
    assert batch["next_sentence_label"].tolist() == [features[0].next_sentence_label, 1]


def test_bad_options_and_foreign_tokens(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_seq_length"):
        InstanceOptions(max_seq_length=4)
    with pytest.raises(ValueError, match="dupe_factor"):
        InstanceOptions(dupe_factor=0)
    docs = read_documents([CORPUS.splitlines()], tiny_tokenizer.tokenize)
    inst = create_training_instances(docs, ["zebra"], InstanceOptions(max_seq_length=11, masked_lm_prob=1.0),
                                     random.Random(0))
    with pytest.raises(ValueError, match="not in the vocab"):
        for i in inst:
            instance_to_feature(i, tiny_tokenizer.vocab)
