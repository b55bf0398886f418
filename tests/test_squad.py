"""SQuAD: reading, sliding windows and their invariants, post-processing against the original's loops."""

from __future__ import annotations

import collections
import json
import math
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert.tasks import squad, squad_metrics, squad_postprocess
from bert.tasks.records import CachedTokenizer, SquadExample, SquadResult

FIXTURE_V2 = Path(__file__).parent / "fixtures" / "squad_v2_sample.json"


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from bert.tokenization import BertTokenizer

    return CachedTokenizer(BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True))


@pytest.fixture(scope="module")
def dev_examples(shared_data):
    return squad.read_squad_examples(shared_data / "squad" / "v1.1" / "dev-v1.1.json", is_training=False)


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a bad window setting must be an error, never an endless loop)."""

    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_dev_v11_has_10570_questions_on_48_articles(shared_data, dev_examples):
    data = squad.load_squad_json(shared_data / "squad" / "v1.1" / "dev-v1.1.json")
    assert len(data) == 48 and len(dev_examples) == 10570
    assert len({e.qas_id for e in dev_examples}) == 10570
    paragraphs = sum(len(article["paragraphs"]) for article in data)
    assert len({id(e.doc_tokens) for e in dev_examples}) == paragraphs  # questions share their paragraph
    assert all(e.answers and e.start_position is not None and not e.is_impossible for e in dev_examples)


def test_split_context_words_and_offsets():
    words, char_to_word = squad.split_context(" Hi  there\u202fyou\tall\u00a0x")
    # U+202F separates words as in the original; NBSP (U+00A0) does not
    assert words == ["Hi", "there", "you", "all\u00a0x"]
    assert char_to_word == [-1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]


def _write_squad(tmp_path, context, qas, name="s.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")  # fmt: skip
    return path


def test_answer_span_is_tightened_to_the_tokens_that_spell_it(tmp_path, tokenizer):
    context = "The leader was John Smith (1895-1943). The Japanese electronics industry is large."
    qas = [
        {"id": "year", "question": "What year was John Smith born?",
         "answers": [{"text": "1895", "answer_start": context.index("1895")}]},
        {"id": "country", "question": "Which country?",
         "answers": [{"text": "Japan", "answer_start": context.index("Japan")}]},
    ]  # fmt: skip
    examples = squad.read_squad_examples(_write_squad(tmp_path, context, qas), is_training=True)
    # the whitespace word is "(1895-1943)." ...
    assert examples[0].doc_tokens[examples[0].start_position] == "(1895-1943)."
    features = squad.convert_examples_to_features(examples, tokenizer, 64, 32, 16, is_training=True)
    year, country = features
    # ... but the answer is the single token 1895 of ( 1895 - 1943 ) .
    assert year.tokens[year.start_position : year.end_position + 1] == ["1895"]
    # "Japan" is part of the single token "japanese": the word is kept
    assert country.tokens[country.start_position : country.end_position + 1] == ["japanese"]


def test_max_context_example_from_the_original():
    #  Doc: the man went to the store and bought a gallon of milk
    #  Span A: the man went to the / B: to the store and bought / C: and bought a gallon of / D: gallon of milk
    spans = squad.doc_spans(12, max_tokens_for_doc=5, doc_stride=3)
    assert spans == [(0, 5), (3, 5), (6, 5), (9, 3)]
    best = squad.max_context_span(spans, 12)
    assert best[7] == 2  # "bought": 1 left / 3 right context in C beats 4 / 0 in B
    assert best.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


def _max_context_index(spans, position):
    # the original's _check_is_max_context, transcribed (returning the best span it compares with)
    best_score, best_span_index = None, None
    for span_index, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return best_span_index


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(1, 80), st.data())
def test_windows_cover_every_token_within_the_limit(num_tokens, window, data):
    stride = data.draw(st.integers(1, window))
    spans = squad.doc_spans(num_tokens, window, stride)
    assert spans[0][0] == 0 and sum(spans[-1]) == num_tokens
    assert all(0 <= length <= window for _, length in spans)
    for (s0, l0), (s1, _) in zip(spans, spans[1:]):
        assert s0 < s1 <= s0 + l0  # advances, and leaves no gap
    best = squad.max_context_span(spans, num_tokens)
    assert best.tolist() == [_max_context_index(spans, p) for p in range(num_tokens)]


def test_impossible_window_settings_are_errors_not_hangs(dev_examples, tokenizer):
    examples = dev_examples[:3]
    with deadline(20):
        with pytest.raises(ValueError, match="leaves no room for the context"):
            squad.convert_examples_to_features(examples, tokenizer, 64, 16, 64, is_training=False)
        with pytest.raises(ValueError, match="doc_stride must be positive"):
            squad.convert_examples_to_features(examples, tokenizer, 128, 0, 64, is_training=False)
        # an 11-token question leaves 128 - 11 - 3 = 114 context tokens: a stride of 120 cannot work
        assert len(tokenizer.tokenize(examples[0].question_text)) == 11
        with pytest.raises(ValueError, match=f"question {examples[0].qas_id}: doc_stride 120 is larger than the window"):
            squad.convert_examples_to_features(examples, tokenizer, 128, 120, 64, is_training=False)
        # the same stride with a window just large enough works
        assert squad.convert_examples_to_features(examples[:1], tokenizer, 134, 120, 64, is_training=False)


def test_feature_invariants_on_dev(dev_examples, tokenizer):
    examples = dev_examples[::40]
    for max_len, stride, max_query in [(384, 128, 64), (64, 20, 16), (48, 8, 40)]:
        features = squad.convert_examples_to_features(examples, tokenizer, max_len, stride, max_query, False)
        windows = collections.defaultdict(list)
        for f in features:
            n = len(f.input_ids)
            assert n <= max_len and len(f.tokens) == len(f.segment_ids) == len(f.token_to_orig_map) == n
            assert f.tokens[0] == "[CLS]" and f.tokens[-1] == "[SEP]" and f.start_position is None
            query = f.segment_ids.index(1) - 2
            assert 0 < query <= max_query and f.tokens[query + 1] == "[SEP]"
            assert f.input_ids == tokenizer.convert_tokens_to_ids(f.tokens)
            windows[f.example_index].append(f)
        for index, fs in windows.items():
            words = examples[index].doc_tokens
            # every word with tokens appears in some window; each token has exactly one max-context window
            covered = {w for f in fs for w in f.token_to_orig_map if w >= 0}
            assert covered == {i for i, w in enumerate(words) if tokenizer.tokenize(w)}
            flagged = [t for f in fs for t, m in zip(f.tokens, f.token_is_max_context) if m]
            assert flagged == [t for w in words for t in tokenizer.tokenize(w)]
            assert [f.doc_span_index for f in fs] == list(range(len(fs)))
        assert [f.unique_id for f in features] == list(range(1000000000, 1000000000 + len(features)))


def test_v2_fixture_examples_and_training_features(tokenizer):
    examples = squad.read_squad_examples(FIXTURE_V2, is_training=True, version_2_with_negative=True)
    assert [e.qas_id for e in examples if e.is_impossible] == ["q-tolls-start", "q-painter", "q-closed"]
    assert all(e.start_position == -1 and e.orig_answer_text == "" for e in examples if e.is_impossible)
    features = squad.convert_examples_to_features(examples, tokenizer, 24, 6, 10, is_training=True)
    answers = collections.defaultdict(set)
    for f in features:
        e = examples[f.example_index]
        if e.is_impossible:
            assert f.is_impossible and (f.start_position, f.end_position) == (0, 0)
        else:
            answers[e.qas_id].add(" ".join(f.tokens[f.start_position : f.end_position + 1]))
    # several windows per question; those without the answer point at [CLS]
    assert len({f.example_index for f in features if f.doc_span_index > 0}) > len(examples) // 2
    assert sum("[CLS]" in spelled for spelled in answers.values()) >= 3
    assert {q: spelled - {"[CLS]"} for q, spelled in answers.items()} == {
        "q-open": {"1931"}, "q-designer": {"il ##se mar ##r"}, "q-arch": {"240 metres"},
        "q-founder": {"tomas ruiz"}, "q-stalls": {"12"},
    }  # fmt: skip


def test_get_final_text_cases():
    gft = squad_postprocess.get_final_text
    assert gft("steve smith", "Steve Smith's", True) == "Steve Smith"
    assert gft("1895", "(1895-1943).", True) == "1895"
    assert gft("tomas", "Tomás", True) == "Tomás"  # accents stripped in the tokens, kept in the answer
    assert gft("Smith", "Smith's", False) == "Smith"
    assert gft("jones", "Steve Smith's", True) == "Steve Smith's"  # not found: the whole span
    # NBSP is whitespace to the BasicTokenizer, so the character counts differ: the whole span
    assert gft("cafe", "café\u00a0market", True) == "café\u00a0market"


def _reference_predictions(examples, features, results, n_best, max_answer, v2, threshold):
    """run_squad.py's write_predictions transcribed loop for loop (dicts built from our lists)."""
    by_id = {r.unique_id: r for r in results}
    out, nbest_out, odds = {}, {}, {}
    for example_index, example in enumerate(examples):
        feats = [f for f in features if f.example_index == example_index]
        prelim, score_null, min_null, null_s, null_e = [], 1000000, 0, 0, 0
        for fi, f in enumerate(feats):
            r = by_id[f.unique_id]
            t2o = {i: w for i, w in enumerate(f.token_to_orig_map) if w >= 0}
            maxc = {i: m for i, m in enumerate(f.token_is_max_context) if i in t2o}
            best = lambda logits: [i for i, _ in sorted(enumerate(logits), key=lambda x: x[1], reverse=True)][:n_best]
            if v2 and r.start_logits[0] + r.end_logits[0] < score_null:
                score_null, min_null = r.start_logits[0] + r.end_logits[0], fi
                null_s, null_e = r.start_logits[0], r.end_logits[0]
            for s in best(r.start_logits):
                for e in best(r.end_logits):
                    if s >= len(f.tokens) or e >= len(f.tokens) or s not in t2o or e not in t2o:
                        continue
                    if not maxc.get(s, False) or e < s or e - s + 1 > max_answer:
                        continue
                    prelim.append((fi, s, e, r.start_logits[s], r.end_logits[e]))
        if v2:
            prelim.append((min_null, 0, 0, null_s, null_e))
        prelim.sort(key=lambda p: p[3] + p[4], reverse=True)
        seen, nbest = {}, []
        for fi, s, e, sl, el in prelim:
            if len(nbest) >= n_best:
                break
            f = feats[fi]
            if s > 0:
                tok_text = " ".join(f.tokens[s : e + 1]).replace(" ##", "").replace("##", "")
                tok_text = " ".join(tok_text.strip().split())
                orig_text = " ".join(example.doc_tokens[f.token_to_orig_map[s] : f.token_to_orig_map[e] + 1])
                text = squad_postprocess.get_final_text(tok_text, orig_text, True)
                if text in seen:
                    continue
            else:
                text = ""
            seen[text] = True
            nbest.append((text, sl, el))
        if v2 and "" not in seen:
            nbest.append(("", null_s, null_e))
        if not any(t for t, _, _ in nbest):
            nbest.append(("empty", 0.0, 0.0))
        scores = [sl + el for _, sl, el in nbest]
        exps = [math.exp(x - max(scores)) for x in scores]
        nbest_out[example.qas_id] = [(t, p / sum(exps)) for (t, _, _), p in zip(nbest, exps)]
        non_null = next(x for x in nbest if x[0])
        if v2:
            odds[example.qas_id] = score_null - non_null[1] - non_null[2]
            out[example.qas_id] = "" if odds[example.qas_id] > threshold else non_null[0]
        else:
            out[example.qas_id] = nbest[0][0]
    return out, nbest_out, odds


@pytest.mark.parametrize("v2", [False, True])
def test_postprocessing_equals_the_original_loops_on_random_logits(dev_examples, tokenizer, v2):
    rng = np.random.default_rng(7)
    examples = dev_examples[::60]
    features = squad.convert_examples_to_features(examples, tokenizer, 96, 32, 24, is_training=False)
    results = []
    for f in features:
        pad = int(rng.integers(0, 5))  # padded logits: positions past the tokens must be ignored
        logits = rng.normal(0, 2, (2, len(f.input_ids) + pad)).round(1).astype(np.float32)  # ties too
        logits[:, 0] += 4 * (f.example_index % 2)  # [CLS] (no answer) strong for half the questions
        results.append(SquadResult(f.unique_id, logits[0].tolist(), logits[1].tolist()))
    ours = squad_postprocess.compute_predictions(
        examples, features, results, n_best_size=10, max_answer_length=12,
        version_2_with_negative=v2, null_score_diff_threshold=0.5,
    )  # fmt: skip
    ref, ref_nbest, ref_odds = _reference_predictions(examples, features, results, 10, 12, v2, 0.5)
    assert ours.predictions == ref
    assert {q: [(e["text"], pytest.approx(e["probability"], abs=1e-12)) for e in n] for q, n in ours.nbest.items()} == ref_nbest
    assert ours.null_odds == pytest.approx(ref_odds, abs=1e-9) and bool(ours.null_odds) == v2
    if v2:
        assert 0 < list(ref.values()).count("") < len(ref)


def test_v2_postprocessing_threshold_and_files(tmp_path, tokenizer):
    data = squad.load_squad_json(FIXTURE_V2)
    examples = squad.read_squad_examples(FIXTURE_V2, is_training=True, version_2_with_negative=True)
    features = squad.convert_examples_to_features(examples, tokenizer, 384, 128, 64, is_training=True)
    assert len(features) == len(examples)  # short contexts: one window each
    results = []
    for f in features:  # the gold span scores 3 + 3; [CLS] (the null answer) scores 2 + 2
        start, end = np.zeros(len(f.tokens)), np.zeros(len(f.tokens))
        start[0] = end[0] = 2.0
        if not f.is_impossible:
            start[f.start_position], end[f.end_position] = 3.0, 3.0
        results.append(SquadResult(f.unique_id, start, end))
    preds = squad_postprocess.compute_predictions(examples, features, results, version_2_with_negative=True)
    assert preds.predictions == {
        "q-open": "1931", "q-designer": "Ilse Marr", "q-arch": "240 metres", "q-founder": "Tomás Ruiz",
        "q-stalls": "12", "q-tolls-start": "", "q-painter": "", "q-closed": "",
    }  # fmt: skip
    # null 4 - best span 6 = -2 for answerable questions; impossible: null 4 - best span (0 + 0)
    assert preds.null_odds == {q: (-2.0 if p else 4.0) for q, p in preds.predictions.items()}
    top = preds.nbest["q-open"][0]
    assert top == {"text": "1931", "probability": pytest.approx(top["probability"]), "start_logit": 3.0, "end_logit": 3.0}
    assert all(abs(sum(e["probability"] for e in n) - 1) < 1e-9 for n in preds.nbest.values())
    assert all(any(e["text"] == "" for e in n) for n in preds.nbest.values())
    r = squad_metrics.evaluate_v2(data, preds.predictions, preds.null_odds)
    assert r["exact"] == 100.0 and r["HasAns_total"] == 5 and r["NoAns_total"] == 3
    assert r["best_exact"] == 100.0 and r["best_exact_thresh"] == -2.0

    # a threshold above 4 answers every question: an impossible one gets its first span (all score 0),
    # the paragraph's first token ("copper" of Copperfield); "The" normalises to "", so counts as no answer
    high = squad_postprocess.compute_predictions(
        examples, features, results, version_2_with_negative=True, null_score_diff_threshold=5.0
    )
    assert {q: high.predictions[q] for q in ("q-tolls-start", "q-painter", "q-closed")} == {
        "q-tolls-start": "The", "q-painter": "The", "q-closed": "Copper"}  # fmt: skip
    assert squad_metrics.evaluate_v2(data, high.predictions)["NoAns_exact"] == pytest.approx(200 / 3)

    paths = squad_postprocess.write_predictions(preds, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbest_predictions.json", "null_odds.json", "predictions.json"]
    assert json.loads(paths["predictions"].read_text(encoding="utf-8")) == preds.predictions
    assert json.loads(paths["null_odds"].read_text(encoding="utf-8")) == preds.null_odds
    assert json.loads(paths["nbest"].read_text(encoding="utf-8")) == preds.nbest
    v1 = squad_postprocess.SquadPredictions(predictions={"a": "x"}, nbest={"a": []})
    assert set(squad_postprocess.write_predictions(v1, tmp_path / "v1")) == {"predictions", "nbest"}


def test_results_must_cover_every_feature(tokenizer):
    example = SquadExample("q", "who?", ["nobody", "knows"])
    features = squad.convert_examples_to_features([example], tokenizer, 32, 8, 8, is_training=False)
    with pytest.raises(ValueError, match="no result for feature unique_id 1000000000"):
        squad_postprocess.compute_predictions([example], features, [])
    empty = squad.convert_examples_to_features([SquadExample("e", "who?", [])], tokenizer, 32, 8, 8, False)
    assert len(empty) == 1  # an empty context still gets a window, and an answer
    result = SquadResult(empty[0].unique_id, [0.0] * 4, [0.0] * 4)
    assert squad_postprocess.compute_predictions([SquadExample("e", "who?", [])], empty, [result]).predictions == {
        "e": "empty"
    }
