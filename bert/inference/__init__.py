"""Putting a fine-tuned model to work: ``bert predict``'s library half.

    inputs     TSV / CSV / JSONL / SQuAD JSON / plain lines -> typed inputs, checked row by row
    predictor  a model folder (bert/tasks/folder.py's metadata) + inputs -> one output record per input,
               real tokens only (length-sorted batches, the packed path)
"""

from bert._lazy import lazy_exports

_EXPORTS = {"Predictor": "bert.inference.predictor", "read_inputs": "bert.inference.inputs",
            "TextInput": "bert.inference.inputs", "QuestionInput": "bert.inference.inputs",
            "ChoiceInput": "bert.inference.inputs"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
