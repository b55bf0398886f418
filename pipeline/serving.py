"""The MLflow Model of a fine-tuned trial: text in, labels and probabilities out (MLflow loads this file).

    mlflow models serve -m models:/bert-mrpc@champion --env-manager local --port 5001
    curl -d '{"dataframe_records": [{"text": "The cat sat.", "text_b": "A cat was sitting."}]}' \
         -H 'Content-Type: application/json' http://127.0.0.1:5001/invocations
    {"predictions": [{"label": "equivalent", "probabilities": {"not_equivalent": 0.08, "equivalent": 0.92}}]}

A "model from code" (pipeline.models logs this file with the model): MLflow runs it to get the model,
so nothing is pickled and the class need not be importable where the model is served. The model
folder (weights, vocab, tokenizer_config.json, config.json with the task entry of bert/tasks/folder.py that
the finetune stage writes) is the artifact ``model``: it says how to read it. The predictions are
``bert predict``'s own (bert.inference.Predictor), without the echoed inputs:

    input columns                          output columns
    text [, text_b]                        label, probabilities {label: p}    (classification)
                                           score                              (regression)
                                           labels, probabilities              (multi-label)
    question, context                      answer, score                      (extractive QA)
    context, choices [, prefix]            choice {index, text}, probabilities [p, ...]   (multiple choice)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

ECHOED = ("id", "text", "text_a", "text_b", "question", "context", "choices", "prefix")


def _text(value: Any) -> Optional[str]:
    """A cell as text; a missing one (None, NaN) as None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def to_inputs(frame: pd.DataFrame, kind: str) -> list:
    """The rows of a DataFrame as bert.inference inputs of a model's kind ("text", "qa" or "choice")."""
    from bert.inference.inputs import ChoiceInput, QuestionInput, TextInput

    def column(name: str) -> list:
        if name not in frame.columns:
            raise ValueError(f"this model takes the column {name!r}; got {list(frame.columns)}")
        return list(frame[name])

    ids = [str(i) for i in range(len(frame))]
    if kind == "qa":
        return [QuestionInput(i, str(q), str(c)) for i, q, c in zip(ids, column("question"), column("context"))]
    if kind == "choice":
        prefixes = list(frame["prefix"]) if "prefix" in frame.columns else [None] * len(frame)
        return [ChoiceInput(i, str(c), tuple(str(x) for x in choices), _text(p) or "")
                for i, c, choices, p in zip(ids, column("context"), column("choices"), prefixes)]
    pairs = list(frame["text_b"]) if "text_b" in frame.columns else [None] * len(frame)
    return [TextInput(i, str(a), _text(b)) for i, a, b in zip(ids, column("text"), pairs)]


def verify_model_files(folder: Path, digests: dict[str, str] | None) -> None:
    """Refuse a model folder whose files are not those logged (their sha256 when logged: artifact ``sha256``).

    The logged files are links to DVC's cache (pipeline/models.py): one edited in place would change both.
    Raises:
        ValueError: one line naming the changed or missing files.
    """
    from bert.io.fingerprint import changed_files

    changed = changed_files(folder, digests or {})
    if changed:
        raise ValueError(f"{folder}: {', '.join(changed)} changed since the model was logged (sha256 differs "
                         "or missing); log the model again from its folder, or serve another version")


class BertPyfunc(PythonModel):
    """A fine-tuned model folder behind MLflow's pyfunc interface (module docstring)."""

    def load_context(self, context: Any) -> None:
        from bert.inference.predictor import Predictor  # the bert package ships with the model
        from bert.io.jsonfile import read_json

        digests = context.artifacts.get("sha256")  # absent from a model logged before the check existed
        verify_model_files(Path(context.artifacts["model"]), read_json(digests, dict) if digests else None)
        self.predictor = Predictor(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Optional[dict[str, Any]] = None
                ) -> pd.DataFrame:
        """One output row per input row (module docstring)."""
        records = self.predictor.predict(to_inputs(model_input, self.predictor.input_kind))
        return pd.DataFrame([{k: v for k, v in r.items() if k not in ECHOED} for r in records])


mlflow.models.set_model(BertPyfunc())
