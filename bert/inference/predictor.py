"""A fine-tuned model folder put to work: inputs of its task in, one output record per input out.

    folder ──read_task_metadata──► kind, labels, geometry      tokenizer_config.json ──► casing
    inputs ──features (windows / SQuAD windows / choices)──► bert.engine.predict ──► logits ──► records

The model runs real tokens only: bert.engine.predict sorts the features by length (and restores their order),
pads each batch to its longest member and hands the heads the collate function's packing, so that embeddings,
projections and feed-forward layers compute the real tokens alone (the QA head's logits too). Output records:

    single / pair      {"id", "text" | "text_a", "text_b", "label", "probabilities": {label: p}}
    regression         {"id", "text" ..., "score"}
    multi-label        {"id", "text" ..., "labels": [above the threshold], "probabilities": {label: p}}
    squad              {"id", "question", "context", "answer", "score", ("null_odds",) ("n_best": [{"text", "score"}])}
    multiple choice    {"id", "context", "choices", "choice": {"index", "text"}, "probabilities": [p, ...]}
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch

from bert.data.cache import pad_collate
from bert.engine.distributed import DistContext
from bert.engine.prediction import predict as run_model
from bert.inference.inputs import ChoiceInput, Input, QuestionInput, TextInput
from bert.model.pretrained import resolve_model_dir
from bert.modeling import BertForMultipleChoice, BertForQuestionAnswering, BertForSequenceClassification
from bert.tasks.folder import TaskMetadata, read_task_metadata
from bert.tasks.glue import build_pair_input
from bert.tasks.records import CachedTokenizer, InputExample, SquadExample, SquadResult
from bert.tasks.registry import TaskKind
from bert.tasks.squad import convert_examples_to_features, split_context
from bert.tasks.squad_postprocess import compute_predictions
from bert.tasks.windows import WindowSettings, combine_windows, convert_examples_to_windows
from bert.text.fast_tokenization import FastTokenIds
from bert.tokenization import BertTokenizer

logger = logging.getLogger(__name__)

HEADS = {TaskKind.SQUAD: (BertForQuestionAnswering, "qa_outputs"),
         TaskKind.MULTIPLE_CHOICE: (BertForMultipleChoice, "classifier")}
INPUT_KINDS = {TaskKind.SQUAD: "qa", TaskKind.MULTIPLE_CHOICE: "choice"}  # else "text"
DIGITS = 6  # probabilities are rounded to this many decimals, as the evaluate stage writes them


class Predictor:
    """Load a fine-tuned folder once, then ``predict(inputs)`` as often as needed.

    Args:
        model_dir: a model folder (or a name bert.io.hub knows) whose config.json has the task entry
            (bert/tasks/folder.py).
        task: the kind, for a folder without the entry (read_task_metadata's `task`).
        device: "cpu", "cuda", "cuda:1", ... (default: cuda when available).
        precision: "fp32", "bf16" or "fp16" (autocast; outputs in float32).
        batch_size: sequences per forward pass (choices count once per example).
        max_seq_length: tokens per input (default: the folder's).
        window: cut long classification inputs into windows (default: the folder's; False: truncate).
        threshold: multi-label's probability above which a label is predicted (default 0.5).
        n_best: QA's alternatives listed per question (0: none).
        null_score_diff_threshold: SQuAD 2.0's (default: the folder's).
        max_answer_length: QA's longest answer in tokens (default: the folder's).
        cache_dir: download cache for model names.
    """

    def __init__(self, model_dir: str | os.PathLike, task: Optional[str] = None, device: Optional[str] = None,
                 precision: str = "fp32", batch_size: int = 64, max_seq_length: Optional[int] = None,
                 window: WindowSettings | bool | None = None, threshold: float = 0.5, n_best: int = 0,
                 null_score_diff_threshold: Optional[float] = None, cache_dir: str | os.PathLike | None = None,
                 max_answer_length: Optional[int] = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {batch_size}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
        folder = resolve_model_dir(model_dir, cache_dir)
        meta = read_task_metadata(folder, task)
        changes: dict[str, Any] = {}
        if max_seq_length is not None:
            changes["max_seq_length"] = max_seq_length
        if window is not None:
            changes["window"] = window or None
        if null_score_diff_threshold is not None:
            changes["null_score_diff_threshold"] = null_score_diff_threshold
        if max_answer_length is not None:
            changes["max_answer_length"] = max_answer_length
        self.meta: TaskMetadata = dataclasses.replace(meta, **changes) if changes else meta
        self.folder, self.batch_size, self.precision = folder, batch_size, precision
        self.threshold, self.n_best = threshold, n_best
        self.tokenizer = BertTokenizer.from_pretrained(folder)  # the casing from tokenizer_config.json
        self.model = self._load_model()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.ctx = DistContext(device=torch.device(device))
        self.model.to(self.ctx.device).eval()

    @property
    def input_kind(self) -> str:
        """What read_inputs reads for this model: "text", "qa" or "choice"."""
        return INPUT_KINDS.get(self.meta.kind, "text")

    def _load_model(self) -> torch.nn.Module:
        kind, config_file = self.meta.kind, self.folder / "config.json"
        head, weight = HEADS.get(kind, (BertForSequenceClassification, "classifier"))
        kwargs: dict[str, Any] = {}
        if head is BertForSequenceClassification:
            kwargs["num_labels"] = len(self.meta.labels) if self.meta.labels else 1
            kwargs["problem_type"] = self.meta.problem_type
        model = head.from_pretrained(self.folder, **kwargs)
        untrained = [k for k in model.load_report.missing if k.startswith(weight + ".")]
        if untrained:
            raise ValueError(f"{self.folder}: the {head.__name__} head is not in the weights ({', '.join(untrained)}): "
                             "this folder is not fine-tuned; fine-tune it first (the pipeline's finetune stage)")
        if self.meta.max_seq_length > model.config.max_position_embeddings:
            raise ValueError(f"max_seq_length {self.meta.max_seq_length} exceeds the model's max_position_embeddings "
                             f"({model.config.max_position_embeddings}) in {config_file}")
        if len(self.tokenizer.vocab) > model.config.vocab_size:
            raise ValueError(f"{self.folder}: vocab.txt has {len(self.tokenizer.vocab)} tokens, but {config_file} "
                             f"has vocab_size {model.config.vocab_size}: the vocab does not belong to this model")
        return model

    def predict(self, inputs: Sequence[Input], progress: bool = False) -> list[dict[str, Any]]:
        """One output record per input, in input order (module docstring), each echoing its input's fields.

        Args:
            inputs: records of this model's input kind (bert.inference.inputs.read_inputs makes them).
            progress: a progress bar over the batches (stderr).
        """
        if not inputs:
            return []
        expected = {"qa": QuestionInput, "choice": ChoiceInput}.get(self.input_kind, TextInput)
        if not all(isinstance(x, expected) for x in inputs):
            raise ValueError(f"this {self.meta.kind.value} model takes {expected.__name__} inputs")
        if self.meta.kind is TaskKind.SQUAD:
            return self._answer(inputs, progress)  # type: ignore[arg-type]
        if self.meta.kind is TaskKind.MULTIPLE_CHOICE:
            return self._choose(inputs, progress)  # type: ignore[arg-type]
        return self._classify(inputs, progress)  # type: ignore[arg-type]

    def _run(self, items: list[dict[str, torch.Tensor]], lengths: list[int], progress: bool):
        return run_model(self.model, items, pad_collate, batch_size=self.batch_size, precision=self.precision,
                         ctx=self.ctx, lengths=lengths, progress=progress)

    def _classify(self, inputs: Sequence[TextInput], progress: bool) -> list[dict[str, Any]]:
        meta, ids = self.meta, FastTokenIds(self.tokenizer)
        if meta.window is not None:
            examples = [InputExample(str(i), x.text_a, x.text_b) for i, x in enumerate(inputs)]
            windows = convert_examples_to_windows(examples, None, meta.max_seq_length, meta.window.stride, ids)
            rows = [(w.input_ids, w.segment_ids) for w in windows]
        else:
            rows = []
            for x in inputs:
                tokens, segments, _ = build_pair_input(ids.tokenize(x.text_a),
                                                       None if x.text_b is None else ids.tokenize(x.text_b),
                                                       meta.max_seq_length)
                rows.append((ids.convert_tokens_to_ids(tokens), segments))
        items = [{"input_ids": torch.tensor(a), "token_type_ids": torch.tensor(b)} for a, b in rows]
        (logits,) = self._run(items, [len(a) for a, _ in rows], progress)
        logits = logits.numpy()
        if meta.window is not None:
            logits = combine_windows(logits, [w.example_index for w in windows], len(inputs), meta.window.combine)
        out = []
        if meta.kind is TaskKind.REGRESSION:
            for x, row in zip(inputs, logits):
                out.append({**x.echo(), "score": float(row[0])})
        elif meta.kind is TaskKind.MULTI_LABEL_CLASSIFICATION:
            probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            for x, p in zip(inputs, probs):
                out.append({**x.echo(), "labels": [name for name, q in zip(meta.labels, p) if q > self.threshold],
                            "probabilities": _named(meta.labels, p)})
        else:
            probs = _softmax(logits)
            for x, p in zip(inputs, probs):
                out.append({**x.echo(), "label": meta.labels[int(np.argmax(p))],
                            "probabilities": _named(meta.labels, p)})
        return out

    def _choose(self, inputs: Sequence[ChoiceInput], progress: bool) -> list[dict[str, Any]]:
        meta, ids = self.meta, FastTokenIds(self.tokenizer)
        counts = {len(x.choices) for x in inputs}
        if len(counts) > 1 or (meta.num_choices is not None and counts != {meta.num_choices}):
            raise ValueError(f"every input needs {meta.num_choices or min(counts)} choices, got {sorted(counts)}")
        items, lengths = [], []
        for x in inputs:
            context, prefix = ids.tokenize(x.context), ids.tokenize(x.prefix) if x.prefix else []
            rows = [build_pair_input(context, [*prefix, *ids.tokenize(c)], meta.max_seq_length)[:2]
                    for c in x.choices]
            longest = max(len(tokens) for tokens, _ in rows)
            item = {key: torch.zeros(len(rows), longest, dtype=torch.long)
                    for key in ("input_ids", "token_type_ids", "attention_mask")}
            for c, (tokens, segments) in enumerate(rows):  # [C, T], as bert.data.cache's CachedFeatures
                item["input_ids"][c, :len(tokens)] = torch.tensor(ids.convert_tokens_to_ids(tokens))
                item["token_type_ids"][c, :len(tokens)] = torch.tensor(segments)
                item["attention_mask"][c, :len(tokens)] = 1
            items.append(item)
            lengths.append(longest)
        (logits,) = self._run(items, lengths, progress)
        out = []
        for x, p in zip(inputs, _softmax(logits.numpy())):
            best = int(np.argmax(p))
            out.append({**x.echo(), "choice": {"index": best, "text": x.choices[best]},
                        "probabilities": [round(float(q), DIGITS) for q in p]})
        return out

    def _answer(self, inputs: Sequence[QuestionInput], progress: bool) -> list[dict[str, Any]]:
        meta = self.meta
        examples, paragraphs = [], {}
        for i, x in enumerate(inputs):
            if x.context not in paragraphs:  # questions on one context share its words (and their tokens)
                paragraphs[x.context] = split_context(x.context)[0]
            examples.append(SquadExample(str(i), x.question, paragraphs[x.context]))
        features = convert_examples_to_features(examples, CachedTokenizer(self.tokenizer), meta.max_seq_length,
                                                meta.doc_stride, meta.max_query_length, is_training=False)
        items = [{"input_ids": torch.tensor(f.input_ids), "token_type_ids": torch.tensor(f.segment_ids)}
                 for f in features]
        start, end = self._run(items, [len(f.input_ids) for f in features], progress)
        results = [SquadResult(f.unique_id, start[i, :len(f.tokens)].tolist(), end[i, :len(f.tokens)].tolist())
                   for i, f in enumerate(features)]
        found = compute_predictions(examples, features, results, max(20, self.n_best), meta.max_answer_length,
                                    self.tokenizer.do_lower_case, meta.version_2_with_negative,
                                    meta.null_score_diff_threshold)
        out = []
        for x, example in zip(inputs, examples):
            answer, nbest = found.predictions[example.qas_id], found.nbest[example.qas_id]
            record = {**x.echo(), "answer": answer,
                      "score": round(next((e["probability"] for e in nbest if e["text"] == answer), 0.0), DIGITS)}
            if meta.version_2_with_negative:
                record["null_odds"] = round(found.null_odds[example.qas_id], DIGITS)
            if self.n_best:
                record["n_best"] = [{"text": e["text"], "score": round(e["probability"], DIGITS)}
                                    for e in nbest[: self.n_best]]
            out.append(record)
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _named(labels: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    return {name: round(float(p), DIGITS) for name, p in zip(labels, probs)}
