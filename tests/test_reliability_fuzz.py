"""Property-based fuzzing (hypothesis, bounded examples) of the readers, the tokenizer on bytes and the
feature converters, and SQuAD post-processing.

Properties: a reader given anything raises DataFormatError or returns examples (never another
exception); well-formed files round-trip exactly; features never exceed max_seq_length; every SQuAD
answer is a span of its context and the n-best lists are ranked probability distributions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert.tasks import glue, squad, swag
from bert.tasks.records import CachedTokenizer, DataFormatError, SquadResult
from bert.tasks.squad_postprocess import compute_predictions, get_final_text
from bert.tokenization import BasicTokenizer, BertTokenizer
from reliability_helpers import BAD_INPUT, tally

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
FIELD = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, blacklist_characters="\t\n\r"), max_size=30)
TSV_ALPHABET = st.text(st.sampled_from(["\t", "\n", "\r", "a", "0", "1", '"', " ", "\ufeff", "\x00", "é"]), max_size=80)


def _fuzz_case(name: str):
    """Each fuzz test registers once in the tally, as one bad-input case (of max_examples inputs)."""
    return tally(BAD_INPUT, f"fuzz: {name} ({FUZZ.max_examples} generated inputs)")


def _read_or_format_error(read, path):
    try:
        return read(path)
    except DataFormatError as err:
        assert "\n" not in str(err) and str(path) in str(err), str(err)
        return None


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer(minilm_dir / "vocab.txt")


# ----------------------------------------------------------------------------------------------
# Readers.


def test_glue_round_trip(tmp_path):
    with _fuzz_case("GLUE TSV round trip"):
        @FUZZ
        @given(rows=st.lists(st.tuples(st.sampled_from(["0", "1"]), FIELD, FIELD), max_size=8))
        def check(rows):
            path = tmp_path / "dev.tsv"
            text = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
                f"{label}\t{i}\t{i + 1}\t{a}\t{b}\n" for i, (label, a, b) in enumerate(rows))
            path.write_text(text, encoding="utf-8")
            examples = glue.MRPC.read(path, "dev")
            assert [(e.label, e.text_a, e.text_b) for e in examples] == rows
        check()


def test_glue_reader_on_anything(tmp_path):
    with _fuzz_case("GLUE TSV reader on random bytes and TSV-like text"):
        @FUZZ
        @given(data=st.binary(max_size=200) | TSV_ALPHABET.map(lambda t: t.encode("utf-8")))
        def check(data):
            path = tmp_path / "train.tsv"
            path.write_bytes(data)
            for processor in (glue.MRPC, glue.COLA, glue.STSB):
                examples = _read_or_format_error(lambda p: processor.read(p, "train"), path)
                assert examples is None or all(e.guid.startswith("train-") for e in examples)
        check()


SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]
CSV_FIELD = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)), max_size=20)


def test_swag_round_trip(tmp_path):
    with _fuzz_case("SWAG CSV round trip (quotes, commas, newlines in fields)"):
        @FUZZ
        @given(rows=st.lists(st.tuples(CSV_FIELD, CSV_FIELD, st.lists(CSV_FIELD, min_size=4, max_size=4),
                                       st.integers(0, 3)), max_size=6))
        def check(rows):
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(SWAG_HEADER)
            for i, (sent1, sent2, endings, label) in enumerate(rows):
                writer.writerow([i, "v", str(i), sent1 + " " + sent2, sent1, sent2, "gold", *endings, label])
            path = tmp_path / "val.csv"
            path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
            examples = swag.read_swag_examples(path, is_training=True)
            assert [(e.context_sentence, e.start_ending, list(e.endings), e.label) for e in examples] == \
                [(s1, s2, endings, label) for s1, s2, endings, label in rows]
        check()


def test_swag_reader_on_anything(tmp_path):
    with _fuzz_case("SWAG CSV reader on random text after a valid header"):
        @FUZZ
        @given(body=st.text(st.sampled_from([",", "\n", '"', "a", "0", "3", "\r", "\x00"]), max_size=120))
        def check(body):
            path = tmp_path / "val.csv"
            path.write_text(",".join(SWAG_HEADER) + "\n" + body, encoding="utf-8", newline="")
            _read_or_format_error(lambda p: swag.read_swag_examples(p, is_training=True), path)
        check()


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=False) | ANY_TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["data", "paragraphs", "context", "qas", "id", "question", "answers",
                                         "text", "answer_start", "is_impossible", "x"]), inner, max_size=5),
                    max_leaves=25)


def test_squad_reader_on_any_json(tmp_path):
    with _fuzz_case("SQuAD JSON reader on random JSON built from SQuAD's keys"):
        @FUZZ
        @given(value=JSON, training=st.booleans(), v2=st.booleans())
        def check(value, training, v2):
            path = tmp_path / "dev.json"
            path.write_text(json.dumps({"data": [value]} if isinstance(value, dict) else value), encoding="utf-8")
            _read_or_format_error(lambda p: squad.read_squad_examples(p, training, v2), path)
        check()


# ----------------------------------------------------------------------------------------------
# Tokenizer and feature converters.


def test_tokenizer_on_bytes(tokenizer):
    with _fuzz_case("tokenizer on arbitrary bytes (invalid UTF-8 included)"):
        @FUZZ
        @given(data=st.binary(max_size=60))
        def check(data):
            tokens = tokenizer.tokenize(data)
            assert tokens == tokenizer.tokenize(data.decode("utf-8", "ignore"))
            assert all(t in tokenizer.vocab for t in tokens)
        check()


def test_glue_features_never_exceed_the_length(tokenizer):
    with _fuzz_case("GLUE features: any texts, any max_seq_length >= 4"):
        @FUZZ
        @given(a=ANY_TEXT, b=st.none() | ANY_TEXT, length=st.integers(4, 24))
        def check(a, b, length):
            from bert.tasks.records import InputExample

            (feature,) = glue.convert_examples_to_features([InputExample("dev-0", a, b, "1")], ["0", "1"], length,
                                                           tokenizer)
            ids, types = feature.input_ids, feature.segment_ids
            assert len(ids) == len(types) <= length
            assert ids[0] == tokenizer.vocab["[CLS]"] and ids[-1] == tokenizer.vocab["[SEP]"]
            assert ids.count(tokenizer.vocab["[SEP]"]) == (1 if b is None else 2)
            assert types == sorted(types) and set(types) <= {0, 1}
        check()


# ----------------------------------------------------------------------------------------------
# SQuAD post-processing.

WORD = st.text(st.sampled_from(string.ascii_letters + string.digits + ".,'$-"), min_size=1, max_size=8)


def test_final_text_is_the_original_span():
    with _fuzz_case("get_final_text maps a normalised span back to the original characters"):
        @FUZZ
        @given(words=st.lists(WORD, min_size=1, max_size=8), data=st.data(), lower=st.booleans())
        def check(words, data, lower):
            i = data.draw(st.integers(0, len(words) - 1))
            j = data.draw(st.integers(i, len(words) - 1))
            span = " ".join(words[i:j + 1])
            pred = " ".join(BasicTokenizer(do_lower_case=lower).tokenize(span))
            got = get_final_text(pred, " ".join(words), lower)
            assert got in " ".join(words)
            if pred:  # found (perhaps at an earlier, equal-looking place): the same characters, up to case
                assert got.lower() == span.lower() or (got.lower() in " ".join(words).lower() and not lower)
        check()


def test_final_text_on_any_text():
    with _fuzz_case("get_final_text on arbitrary unicode"):
        @FUZZ
        @given(pred=ANY_TEXT, orig=ANY_TEXT, lower=st.booleans())
        def check(pred, orig, lower):
            assert get_final_text(pred, orig, lower) in orig
        check()


@pytest.fixture(scope="module")
def squad_windows(tmp_path_factory, tokenizer):
    """Three questions on two contexts, cut into many 40-token windows."""
    context_a = " ".join(f"The river number {i} flows past the old mill of Saint-Étienne." for i in range(6))
    context_b = "Steve Smith's dog, born in 1999, won $300 at the fair. It was a sunny day."
    qas = [{"id": "a1", "question": "Which river flows past the mill?", "answers": []},
           {"id": "a2", "question": "What flows?", "answers": []}]
    path = tmp_path_factory.mktemp("squad") / "dev.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [
        {"context": context_a, "qas": qas},
        {"context": context_b, "qas": [{"id": "b1", "question": "How much did the dog win?", "answers": []}]},
    ]}]}), encoding="utf-8")
    examples = squad.read_squad_examples(path, is_training=False)
    features = squad.convert_examples_to_features(examples, CachedTokenizer(tokenizer), 40, 12, 12, False)
    assert len(features) > len(examples)  # several windows per long context
    return examples, features, {"a1": context_a, "a2": context_a, "b1": context_b}


def _logits(features, seed: int, scale: float, special: bool = False) -> list[SquadResult]:
    """Random logits for every window (numpy, seeded by hypothesis): normal * scale, ties when scale is 0,
    and NaN / +-inf sprinkled in when `special`."""
    rng = np.random.default_rng(seed)
    results = []
    for f in features:
        start, end = (rng.standard_normal(len(f.tokens)) * scale for _ in range(2))
        if special:
            for values in (start, end):
                values[rng.random(len(values)) < 0.3] = rng.choice([np.nan, np.inf, -np.inf])
        results.append(SquadResult(f.unique_id, start.tolist(), end.tolist()))
    return results


def test_squad_predictions_from_any_logits(squad_windows):
    examples, features, contexts = squad_windows
    with _fuzz_case("SQuAD post-processing on random logits (v1 and v2, any n-best size and answer length)"):
        @FUZZ
        @given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0]), n_best=st.integers(1, 8),
               max_len=st.integers(1, 12), v2=st.booleans(), threshold=st.floats(-5, 5))
        def check(seed, scale, n_best, max_len, v2, threshold):
            results = _logits(features, seed, scale)
            out = compute_predictions(examples, features, results, n_best, max_len, True, v2, threshold)
            assert set(out.predictions) == set(contexts)
            for qid, answer in out.predictions.items():
                nbest = out.nbest[qid]
                assert answer == "empty" or answer in contexts[qid]
                assert len(nbest) <= n_best + 1
                scores = [e["start_logit"] + e["end_logit"] for e in nbest if e["text"] not in ("", "empty")]
                assert scores == sorted(scores, reverse=True)
                assert math.isclose(sum(e["probability"] for e in nbest), 1.0, rel_tol=1e-6)
                if v2:
                    assert (answer == "") == (out.null_odds[qid] > threshold)
                else:
                    assert answer
        check()


def test_squad_predictions_from_nan_logits(squad_windows):
    """A diverged model's NaN / inf logits: every question still gets an answer from its context."""
    examples, features, contexts = squad_windows
    with _fuzz_case("SQuAD post-processing on NaN/inf logits"):
        @FUZZ
        @given(seed=st.integers(0, 2**32 - 1), v2=st.booleans())
        def check(seed, v2):
            with np.errstate(all="ignore"):
                out = compute_predictions(examples, features, _logits(features, seed, 1.0, special=True), 5, 10,
                                          True, v2, 0.0)
            assert set(out.predictions) == set(contexts)
            assert all(a in ("", "empty") or a in contexts[q] for q, a in out.predictions.items())
        check()
