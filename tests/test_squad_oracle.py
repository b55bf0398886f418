"""The SQuAD oracle: gold answers as logits through the real feature and post-processing path.

Each question's first gold answer becomes its training-path token positions in every window that
holds it; one-hot start/end logits there go through compute_predictions, and the official v1.1
metric scores the answers against all gold answers. Whatever is lost is lost by windowing,
WordPiece alignment and get_final_text: google-research/bert's algorithm scores EM 99.69 / F1 99.75
on dev-v1.1 with both window settings below.
"""

from __future__ import annotations

import numpy as np
import pytest

from bert.tasks import squad, squad_metrics, squad_postprocess
from bert.tasks.records import CachedTokenizer, SquadResult

SETTINGS = [(384, 128), (128, 64)]  # (max_seq_length, doc_stride); max_query_length 64


@pytest.fixture(scope="module")
def dev(shared_data, minilm_dir):
    from bert.tokenization import BertTokenizer

    path = shared_data / "squad" / "v1.1" / "dev-v1.1.json"
    examples = squad.read_squad_examples(path, is_training=False)
    # one cache for both settings: every distinct context word is WordPiece-tokenized once
    tokenizer = CachedTokenizer(BertTokenizer(minilm_dir / "vocab.txt", do_lower_case=True))
    return squad.load_squad_json(path), examples, tokenizer


def _oracle_results(features):
    results = []
    for f in features:
        start = np.zeros(len(f.input_ids), dtype=np.float32)
        end = np.zeros(len(f.input_ids), dtype=np.float32)
        # windows without the answer point at [CLS] (position 0), which is never a span
        start[f.start_position] = 1.0
        end[f.end_position] = 1.0
        results.append(SquadResult(f.unique_id, start, end))
    return results


@pytest.mark.xdist_group("squad_oracle")  # one worker, so the tokenized dev set is shared
@pytest.mark.parametrize("max_seq_length, doc_stride", SETTINGS)
def test_gold_logits_reach_the_original_scores(dev, max_seq_length, doc_stride):
    dataset, examples, tokenizer = dev
    assert len(examples) == 10570
    features = squad.convert_examples_to_features(
        examples, tokenizer, max_seq_length, doc_stride, max_query_length=64, is_training=True
    )
    assert max(len(f.input_ids) for f in features) <= max_seq_length

    # every context token is in the window that gives it most context exactly once, in order
    by_example: dict[int, list] = {}
    for f in features:
        by_example.setdefault(f.example_index, []).append(f)
    for example_index, windows in by_example.items():
        flagged = [t for f in windows for t, m in zip(f.tokens, f.token_is_max_context) if m]
        expected = [t for word in examples[example_index].doc_tokens for t in tokenizer.tokenize(word)]
        assert flagged == expected, examples[example_index].qas_id
    assert len(by_example) == len(examples)

    predictions = squad_postprocess.compute_predictions(
        examples, features, _oracle_results(features), n_best_size=20, max_answer_length=30, do_lower_case=True
    )
    result = squad_metrics.evaluate_v1(dataset, predictions.predictions)
    golds = {qa["id"]: [a["text"] for a in qa["answers"]] for art in dataset for p in art["paragraphs"] for qa in p["qas"]}
    failing = [
        (qid, predictions.predictions[qid], golds[qid])
        for qid in golds
        if max(squad_metrics.exact_match_score(predictions.predictions[qid], g) for g in golds[qid]) == 0
    ]
    print(f"\nmax_seq_length {max_seq_length} / doc_stride {doc_stride}: {len(features)} features, "
          f"EM {result['exact_match']:.2f} F1 {result['f1']:.2f}; {len(failing)} questions fail:")  # fmt: skip
    for qid, prediction, gold in failing:
        print(f"  {qid}: predicted {prediction!r}, gold {gold}")
    assert result["exact_match"] >= 99.6
    assert result["f1"] >= 99.7
