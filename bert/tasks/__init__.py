"""Task data: GLUE, SQuAD, SWAG and your own datasets' readers, feature converters, post-processing and metrics.

    registry           the task table (name -> kind, processor, metric, number of labels)
    records            the dataclasses (examples, features, results) and DataFormatError
    glue / squad / swag   readers and feature converters per format
    owndata            your own CSV / TSV / JSONL datasets (classification, multi-label, regression): read,
                       checked row by row, normalised; their TaskSpec (own_task_spec)
    tables             TSV / CSV / JSONL rows with their line numbers (owndata's and bert predict's reader)
    folder             what a fine-tuned model folder was trained for (config.json's labels and task entry)
    squad_postprocess  logits -> n-best answers, predictions.json and friends
    squad_metrics      the official SQuAD v1.1 / v2.0 evaluation
    metrics            accuracy, F1, Matthews, Pearson, Spearman (numpy)
"""

from bert._lazy import lazy_exports

_EXPORTS = {"DataFormatError": "bert.tasks.records", "TASKS": "bert.tasks.registry",
            "TaskKind": "bert.tasks.registry", "TaskSpec": "bert.tasks.registry", "get_task": "bert.tasks.registry"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
