"""The inference path behind `bert predict` and the evaluate stage: length-sorted batches give the results of
unsorted batch-size-1 runs, the packed path equals the padded one (the QA head's logits included), bf16 stays
close to fp32, windows combine as computed by hand, and on real weights HF's pipeline agrees."""

from __future__ import annotations

import functools
import importlib
import json

import numpy as np
import pytest
import torch

from bert.data.cache import pad_batch, pad_collate
from bert.engine import predict
from bert.inference.inputs import ChoiceInput, QuestionInput, TextInput
from bert.inference.predictor import Predictor
from bert.modeling import BertForQuestionAnswering, BertForSequenceClassification
from bert.tasks.folder import TaskMetadata, write_task_metadata
from bert.tasks.registry import TaskKind
from bert.tasks.windows import WindowSettings, pair_windows
from bert.tokenization import BertTokenizer
from predict_helpers import SENTENCES, tiny_folder

LONG = " ".join(SENTENCES)  # 60-odd tokens: several windows of 16
TEXTS = [TextInput(str(i), s, SENTENCES[-1 - i] if i % 2 else None) for i, s in enumerate(SENTENCES)]
QUESTIONS = [QuestionInput(str(i), q, LONG if i % 2 else SENTENCES[i])
             for i, q in enumerate(["who ran ?", "what was big ?", "where is the dog ?", "the sun ?", "yes ?"])]
CHOICES = [ChoiceInput(str(i), SENTENCES[i], (SENTENCES[i + 1], "yes", SENTENCES[i + 2][:20]), "the" if i else "")
           for i in range(5)]


def _close(sorted_records, single_records, atol=1e-5):
    """Records equal but for float noise: labels, answers and choices identical, numbers within atol."""
    def numbers(value):
        if isinstance(value, dict):
            return [x for v in value.values() for x in numbers(v)]
        if isinstance(value, list):
            return [x for v in value for x in numbers(v)]
        return [value] if isinstance(value, float) else []

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return None if isinstance(value, float) else value

    assert len(sorted_records) == len(single_records)
    for a, b in zip(sorted_records, single_records):
        assert strip(a) == strip(b)
        assert np.allclose(numbers(a), numbers(b), atol=atol, rtol=0), (a, b)


@pytest.mark.parametrize("kind, labels, inputs, settings", [
    (TaskKind.PAIR_CLASSIFICATION, ("a", "b", "c"), TEXTS, {}),
    (TaskKind.REGRESSION, (), TEXTS, {}),
    (TaskKind.MULTI_LABEL_CLASSIFICATION, ("a", "b", "c", "d"), TEXTS, {}),
    (TaskKind.SINGLE_CLASSIFICATION, ("a", "b"), TEXTS, {"window": WindowSettings(5, "max"), "max_seq_length": 12}),
    (TaskKind.SQUAD, (), QUESTIONS, {"max_seq_length": 24, "doc_stride": 6, "max_query_length": 6}),
    (TaskKind.SQUAD, (), QUESTIONS, {"max_seq_length": 24, "doc_stride": 6, "max_query_length": 6,
                                     "version_2_with_negative": True}),
    (TaskKind.MULTIPLE_CHOICE, (), CHOICES, {"num_choices": 3}),
])
def test_sorted_batches_give_the_results_of_batch_size_1(tmp_path, kind, labels, inputs, settings):
    folder = tiny_folder(tmp_path, kind, labels, **settings)
    batched = Predictor(folder, batch_size=3, n_best=3).predict(inputs)
    one_by_one = Predictor(folder, batch_size=1, n_best=3)
    single = [one_by_one.predict([x])[0] for x in inputs]
    _close(batched, single)
    assert [r["id"] for r in batched] == [x.id for x in inputs]  # input order restored


def _engine_outputs(model, items, collate):
    return predict(model, items, collate, batch_size=4, lengths=[len(i["input_ids"]) for i in items], progress=False)


def test_the_packed_path_equals_the_padded_one(tmp_path):
    tokenizer = BertTokenizer.from_pretrained(tiny_folder(tmp_path, TaskKind.REGRESSION))
    items = []
    for text in SENTENCES:
        ids = tokenizer.convert_tokens_to_ids(["[CLS]", *tokenizer.tokenize(text), "[SEP]"])
        items.append({"input_ids": torch.tensor(ids), "token_type_ids": torch.zeros(len(ids), dtype=torch.long)})
    qa = BertForQuestionAnswering.from_pretrained(tiny_folder(tmp_path, TaskKind.SQUAD)).eval()
    packed = _engine_outputs(qa, items, pad_collate)
    padded = _engine_outputs(qa, items, pad_batch)  # no packing: the padded computation
    for p, q in zip(packed, padded):
        assert (p - q).abs().max() < 1e-5
    batch = pad_collate(items[:4])
    start, _ = qa(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], packing=batch["packing"])
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # there was padding to skip
    torch.testing.assert_close(start[batch["attention_mask"] == 0],
                               qa.qa_outputs.bias[0].expand(int((batch["attention_mask"] == 0).sum())))
    classifier = BertForSequenceClassification.from_pretrained(tiny_folder(tmp_path, TaskKind.PAIR_CLASSIFICATION,
                                                                           ("a", "b"))).eval()
    (logits,) = _engine_outputs(classifier, items, pad_collate)
    batch = pad_batch(items)
    with torch.no_grad():  # the padded computation: BertModel.forward without skip_padding
        _, pooled = classifier.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], False)
        assert (classifier.classifier(pooled) - logits).abs().max() < 1e-5


def test_windows_combine_the_windows_logits(tmp_path):
    folder = tiny_folder(tmp_path, TaskKind.SINGLE_CLASSIFICATION, ("a", "b", "c"), max_seq_length=16,
                         window=WindowSettings(6, "mean"))
    predictor = Predictor(folder)
    tokenizer, model = predictor.tokenizer, predictor.model
    windows = pair_windows(tokenizer.tokenize(LONG), None, 16, 6)
    assert len(windows) > 4
    with torch.no_grad():
        logits = torch.cat([model(torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])) for tokens, _ in windows])
    for how, combined in (("mean", logits.mean(0)), ("max", logits.max(0).values)):
        record = Predictor(folder, window=WindowSettings(6, how)).predict([TextInput("x", LONG)])[0]
        expected = torch.softmax(combined.double(), -1).tolist()
        assert list(record["probabilities"].values()) == pytest.approx(expected, abs=2e-6)
    truncated = Predictor(folder, window=False).predict([TextInput("x", LONG)])[0]
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([tokenizer.convert_tokens_to_ids(windows[0][0])])).double(), -1)
    assert list(truncated["probabilities"].values()) == pytest.approx(first[0].tolist(), abs=2e-6)


@pytest.fixture(scope="module")
def minilm_mrpc(tmp_path_factory, minilm_dir, shared_data):
    """The packaged MiniLM with a seeded classification head, saved as a fine-tuned MRPC folder: untrained, but
    centred on MRPC's pooled outputs so that it predicts both labels."""
    folder = tmp_path_factory.mktemp("minilm-mrpc")
    torch.manual_seed(7)
    model = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval()
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    tokenizer = BertTokenizer.from_pretrained(minilm_dir)
    with torch.no_grad():
        pooled = torch.cat([model.bert.pooled(torch.tensor([tokenizer.encode(p.text_a, p.text_b).input_ids]))
                            for p in _mrpc_pairs(shared_data, 48)])
        model.classifier.bias.copy_(-model.classifier.weight @ pooled.mean(0))
    model.save_pretrained(folder)
    BertTokenizer.from_pretrained(minilm_dir).save_pretrained(folder)
    write_task_metadata(folder, TaskMetadata(TaskKind.PAIR_CLASSIFICATION, "mrpc", ("not_equivalent", "equivalent"),
                                             128), do_lower_case=True)
    return folder


def _mrpc_pairs(shared_data, n):
    from bert.tasks.glue import MRPC

    examples = MRPC.get_examples(shared_data / "glue" / "MRPC", "dev")[:n]
    return [TextInput(e.guid, e.text_a, e.text_b) for e in examples]


def test_real_weights_agree_with_hf_pipeline_and_bf16_stays_close(minilm_mrpc, shared_data):
    transformers = pytest.importorskip("transformers")
    pairs = _mrpc_pairs(shared_data, 48)
    ours = Predictor(minilm_mrpc, batch_size=16).predict(pairs)
    pipe = transformers.pipeline("text-classification", model=str(minilm_mrpc), device="cpu", top_k=None)
    theirs = pipe([{"text": p.text_a, "text_pair": p.text_b} for p in pairs], batch_size=16)
    worst = 0.0
    for record, scores in zip(ours, theirs):
        expected = {s["label"]: s["score"] for s in scores}
        assert set(expected) == {"not_equivalent", "equivalent"}  # HF reads our label names
        worst = max(worst, *(abs(record["probabilities"][k] - v) for k, v in expected.items()))
    assert worst < 1e-5, worst
    assert len({r["label"] for r in ours}) == 2
    bf16 = Predictor(minilm_mrpc, batch_size=16, precision="bf16").predict(pairs)
    gap = max(abs(a["probabilities"][k] - b["probabilities"][k])
              for a, b in zip(ours, bf16) for k in a["probabilities"])
    agree = np.mean([a["label"] == b["label"] for a, b in zip(ours, bf16)])
    print(f"fp32 vs HF pipeline: {worst:.2g}; bf16 vs fp32: probabilities within {gap:.3g}, labels agree {agree:.0%}")
    assert gap < 3e-2 and agree >= 0.9


def test_predict_sorts_a_dataset_by_its_own_lengths(tmp_path):
    """bert.engine.predict (the evaluate stage's) sorts by the dataset's `lengths` when none are given."""
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.widths = []

        def forward(self, input_ids, token_type_ids=None, attention_mask=None, packing=None):
            self.widths.append(input_ids.shape[1])
            return attention_mask.sum(1, keepdim=True).float()

    class Data(list):
        lengths = [3, 9, 2, 8, 4, 7]

    data = Data({"input_ids": torch.ones(n, dtype=torch.long)} for n in Data.lengths)
    model = Recorder()
    (out,) = predict(model, data, functools.partial(pad_collate, pad_id=0), batch_size=2, progress=False)
    assert model.widths == [9, 7, 3] and out.view(-1).tolist() == Data.lengths
    assert json.dumps(out.view(-1).tolist())


def test_dense_batches_run_padded_and_give_the_same_outputs(tmp_path, monkeypatch):
    engine = importlib.import_module("bert.engine.prediction")
    lengths = [25, 24, 24, 23, 9, 5, 3]
    items = [{"input_ids": torch.arange(2, 2 + n) % 50 + 2, "token_type_ids": torch.zeros(n, dtype=torch.long)}
             for n in lengths]
    dense, sparse = pad_collate(items[:4]), pad_collate(items[3:])
    assert engine._padded_if_dense(dense)["packing"].positions.numel() == dense["attention_mask"].numel()
    assert engine._padded_if_dense(sparse)["packing"] is sparse["packing"]  # 40 of 92 positions: kept packed
    for kind, labels in ((TaskKind.SQUAD, ()), (TaskKind.PAIR_CLASSIFICATION, ("a", "b"))):
        model = Predictor(tiny_folder(tmp_path, kind, labels)).model
        outputs = {}
        for share in (0.0, 2.0):  # every batch padded; every batch packed
            monkeypatch.setattr(engine, "_DENSE", share)
            outputs[share] = _engine_outputs(model, items, pad_collate)
        for a, b in zip(outputs[0.0], outputs[2.0]):
            assert (a - b).abs().max() < 1e-5
