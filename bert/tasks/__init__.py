"""Task data: GLUE, SQuAD and SWAG readers, feature converters, post-processing and metrics.

    registry           the task table (name -> kind, processor, metric, number of labels)
    records            the dataclasses (examples, features, results) and DataFormatError
    glue / squad / swag   readers and feature converters per format
    squad_postprocess  logits -> n-best answers, predictions.json and friends
    squad_metrics      the official SQuAD v1.1 / v2.0 evaluation
    metrics            accuracy, F1, Matthews, Pearson, Spearman (numpy)
"""

from bert._lazy import lazy_exports

_EXPORTS = {"DataFormatError": "bert.tasks.records", "TASKS": "bert.tasks.registry",
            "TaskKind": "bert.tasks.registry", "TaskSpec": "bert.tasks.registry", "get_task": "bert.tasks.registry"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
