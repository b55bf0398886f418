"""A faithful PyTorch re-implementation of Google's BERT, with pytorch-pretrained-bert 0.6.2's interface.

Everything 0.6.2's package exports for BERT is importable from here (the model classes, the tokenizers,
BertAdam, ``load_tf_weights_in_bert``, ``cached_path``, ...); task data lives in ``bert.tasks``.
Names are imported on first use, so ``import bert`` (and ``bert --help``) does not load torch.
"""

from __future__ import annotations

from bert._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "BertTokenizer": "bert.tokenization",
    "BasicTokenizer": "bert.tokenization",
    "WordpieceTokenizer": "bert.tokenization",
    "BertConfig": "bert.model.config",
    "BertModel": "bert.modeling",
    "BertForPreTraining": "bert.modeling",
    "BertForMaskedLM": "bert.modeling",
    "BertForNextSentencePrediction": "bert.modeling",
    "BertForSequenceClassification": "bert.modeling",
    "BertForMultipleChoice": "bert.modeling",
    "BertForTokenClassification": "bert.modeling",
    "BertForQuestionAnswering": "bert.modeling",
    "load_tf_weights_in_bert": "bert.formats.tf_checkpoint",
    "BertAdam": "bert.optimization",
    "OpenAIAdam": "bert.optimization",
    "PYTORCH_PRETRAINED_BERT_CACHE": "bert.file_utils",
    "cached_path": "bert.file_utils",
    "WEIGHTS_NAME": "bert.file_utils",
    "CONFIG_NAME": "bert.file_utils",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
