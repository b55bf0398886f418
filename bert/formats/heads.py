"""The eight model classes as conversions name them, and each one's parameters: names and shapes from the
config alone, so that a checkpoint can be checked and converted without building a model (and without
importing the model code).

    head name          class                             parameters besides the encoder (bert.*)
    model              BertModel                         (none; its names have no "bert." prefix)
    pretraining        BertForPreTraining                cls.predictions.*, cls.seq_relationship.*
    masked-lm          BertForMaskedLM                   cls.predictions.*
    next-sentence      BertForNextSentencePrediction     cls.seq_relationship.*
    classifier         BertForSequenceClassification     classifier.*  [num_labels, H]
    token-classifier   BertForTokenClassification        classifier.*  [num_labels, H]
    multiple-choice    BertForMultipleChoice             classifier.*  [1, H]
    squad              BertForQuestionAnswering          qa_outputs.*  [2, H]
"""

from __future__ import annotations

from typing import Any

HEADS = {
    "model": "BertModel",
    "pretraining": "BertForPreTraining",
    "masked-lm": "BertForMaskedLM",
    "next-sentence": "BertForNextSentencePrediction",
    "classifier": "BertForSequenceClassification",
    "token-classifier": "BertForTokenClassification",
    "multiple-choice": "BertForMultipleChoice",
    "squad": "BertForQuestionAnswering",
}
HEAD_OF_CLASS = {class_name: head for head, class_name in HEADS.items()}


def _dense(name: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def _layer_norm(name: str, size: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (size,), f"{name}.bias": (size,)}


def parameter_shapes(config: Any, head: str, num_labels: int = 2) -> dict[str, tuple[int, ...]]:
    """The named parameters of the head's model class, with their shapes, as ``named_parameters()`` lists
    them (the MLM decoder weight, tied to the word embeddings, appears once, under the embeddings).

    Args:
        config: a BertConfig (its sizes are read).
        head: a key of HEADS.
        num_labels: for classifier and token-classifier.
    Raises:
        ValueError: an unknown head name.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    hidden, intermediate = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, hidden),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, hidden),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, hidden),
        **_layer_norm("embeddings.LayerNorm", hidden),
    }
    for i in range(config.num_hidden_layers):
        layer = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            shapes.update(_dense(f"{layer}.attention.self.{part}", hidden, hidden))
        shapes.update(_dense(f"{layer}.attention.output.dense", hidden, hidden))
        shapes.update(_layer_norm(f"{layer}.attention.output.LayerNorm", hidden))
        shapes.update(_dense(f"{layer}.intermediate.dense", intermediate, hidden))
        shapes.update(_dense(f"{layer}.output.dense", hidden, intermediate))
        shapes.update(_layer_norm(f"{layer}.output.LayerNorm", hidden))
    shapes.update(_dense("pooler.dense", hidden, hidden))
    if head == "model":
        return shapes
    shapes = {f"bert.{name}": shape for name, shape in shapes.items()}
    if head in ("pretraining", "masked-lm"):
        shapes.update(_dense("cls.predictions.transform.dense", hidden, hidden))
        shapes.update(_layer_norm("cls.predictions.transform.LayerNorm", hidden))
        shapes["cls.predictions.bias"] = (config.vocab_size,)
    if head in ("pretraining", "next-sentence"):
        shapes.update(_dense("cls.seq_relationship", 2, hidden))
    if head in ("classifier", "token-classifier"):
        shapes.update(_dense("classifier", num_labels, hidden))
    if head == "multiple-choice":
        shapes.update(_dense("classifier", 1, hidden))
    if head == "squad":
        shapes.update(_dense("qa_outputs", 2, hidden))
    return shapes
