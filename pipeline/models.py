"""A trial's fine-tuned model logged as an MLflow Model (a pyfunc: text in, labels and probabilities out), its
bytes stored once.

    model_id = log_trial_model(tracker, run_id, Path("models/finetuned/mrpc/seed42"), name="mrpc-seed42")

The model is pipeline/serving.py (a "model from code": MLflow runs that file to load it) around the model
folder (artifact ``model``), with the ``bert`` package shipped beside it (code_paths), so that it serves
anywhere MLflow and torch are installed: ``mlflow models serve -m models:/bert-<task>@champion``. Its
signature and input example follow the task's kind: the folder's task entry (bert/tasks/folder.py), which the
finetune stage writes with the label names and the tokenizer's settings, so the folder alone says how to load it.

Stored once: the model folder is a DVC out, so DVC's cache holds each of its files already (the evaluate
stage, which logs the model, runs after DVC has cached the finetune stage's outs). Once MLflow has copied
the folder into its artifact store, each copied file that DVC's cache holds is replaced by a link to the
cached file: a reflink where the file system makes them (btrfs, XFS: bytes shared copy-on-write), else a
hard link to the read-only (0444) cache object; never a symlink, which ``dvc gc`` would leave dangling.
A hard-linked file outlives the cache entry it shares bytes with, so ``dvc gc`` and MLflow's garbage
collection each stay safe. DVC's own outputs stay copies (``.dvc/config``: ``cache.type = reflink,copy``):
those are the files users edit in place, and through a hard link such an edit rewrote the cached object
(M12). The logged files are nobody's work folder; the loader (pipeline/serving.py) still checks each
against its sha256 when the model was logged (artifact ``sha256``: not the model config, which MLflow would
log as the run's params) and refuses a model whose file changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from bert.io.fileio import atomic_path, atomic_write_text, scratch_folder
from bert.io.fingerprint import file_digests
from bert.io.jsonfile import read_json_object
from pipeline.tracking import Tracker

SERVING = Path(__file__).with_name("serving.py")
BERT_PACKAGE = Path(__file__).resolve().parents[1] / "bert"
MODEL_ARTIFACT = "model"  # the model folder's key among the MLflow Model's artifacts
DIGESTS, DIGESTS_FILE = "sha256", "sha256.json"  # the artifact {file in the model folder: its sha256 when logged}
REQUIREMENTS = ("torch", "numpy", "safetensors", "tqdm", "pandas", "mlflow")
FICLONE = 0x40049409  # ioctl: share a file's extents (a reflink), on filesystems that can
EXAMPLES = {  # one input per kind, as the served model takes it
    "single_classification": {"text": "a gripping, beautifully shot film"},
    "pair_classification": {"text": "The cat sat on the mat.", "text_b": "A cat was sitting on the mat."},
    "regression": {"text": "A man is playing a guitar.", "text_b": "A man plays the guitar."},
    "multi_label_classification": {"text": "The battery died after two days and support never answered."},
    "squad": {"question": "Where did the cat sit?", "context": "The cat sat on the mat by the door."},
    "multiple_choice": {"context": "She opened the umbrella", "choices": ["because it rained.", "to eat it.",
                                                                           "and flew away.", "under the sea."]},
}


def model_kind(model_dir: Path) -> str:
    """The kind of a fine-tuned folder (TaskKind's value), from its config.json's task entry, which the finetune
    stage writes (bert/tasks/folder.py)."""
    try:
        config = read_json_object(model_dir / "config.json")
    except ValueError:
        config = {}
    entry = config.get("task")
    if isinstance(entry, dict) and entry.get("kind") in EXAMPLES:
        return entry["kind"]
    raise ValueError(f"{model_dir}/config.json has no task entry saying what the model was fine-tuned for; "
                     "re-run its finetune stage, which writes it")


def signature_of(kind: str, pair: bool) -> Any:
    """The model's signature: its input columns and output columns (pipeline/serving.py's table)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Map, Object, Property, Schema

    text, number = DataType.string, DataType.double
    if kind == "squad":
        inputs = [ColSpec(text, "question"), ColSpec(text, "context")]
        outputs = [ColSpec(text, "answer"), ColSpec(number, "score")]
    elif kind == "multiple_choice":
        inputs = [ColSpec(text, "context"), ColSpec(Array(text), "choices"), ColSpec(text, "prefix", required=False)]
        outputs = [ColSpec(Object([Property("index", DataType.long), Property("text", text)]), "choice"),
                   ColSpec(Array(number), "probabilities")]
    else:
        inputs = [ColSpec(text, "text"), ColSpec(text, "text_b", required=pair)]
        if kind == "regression":
            outputs = [ColSpec(number, "score")]
        elif kind == "multi_label_classification":
            outputs = [ColSpec(Array(text), "labels"), ColSpec(Map(number), "probabilities")]
        else:
            outputs = [ColSpec(text, "label"), ColSpec(Map(number), "probabilities")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def requirements() -> list[str]:
    """The pip requirements of the served model: what bert and pipeline/serving.py import, at the versions here."""
    found = []
    for name in REQUIREMENTS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name}=={metadata.version(name).partition('+')[0]}")  # no local label (+cpu)
    return found


def log_trial_model(tracker: Tracker, run_id: Optional[str], model_dir: Path, name: str = "model") -> Optional[str]:
    """Log a fine-tuned model folder as the trial run's MLflow Model; its files linked to DVC's cache.

    Args:
        tracker: connected (its failures are counted, never raised).
        run_id: the trial run.
        model_dir: the fine-tuned folder (a DVC out, already cached), with its task entry.
        name: the MLflow Model's name.
    Returns:
        The MLflow Model's id, or None when it could not be logged (said in one line).
    """
    if tracker.down is not None or not run_id:
        return None
    try:
        kind = model_kind(model_dir)
    except ValueError as err:
        print(f"[{tracker.label}] model not logged: {err}", file=sys.stderr)
        return None

    def log() -> str:
        import mlflow
        import pandas as pd
        from mlflow.models import Model

        mlflow.set_tracking_uri(tracker.uri)  # Model.log uses the process's tracking URI
        example = dict(EXAMPLES[kind])
        pair = kind in ("pair_classification", "regression")
        if not pair:
            example.pop("text_b", None)
        model = tracker.client.create_logged_model(tracker.experiment_id, name=name, source_run_id=run_id,
                                                   model_type=f"bert-{kind}")
        with scratch_folder(Path(tempfile.gettempdir()) / "bert-model") as tmp:  # gone after a kill too
            digests = tmp / DIGESTS_FILE  # what the loader checks the model's files against
            atomic_write_text(digests, json.dumps(file_digests(model_dir), indent=1))
            Model.log(None, mlflow.pyfunc, name=name, run_id=run_id, model_id=model.model_id,
                      python_model=str(SERVING), artifacts={MODEL_ARTIFACT: str(model_dir), DIGESTS: str(digests)},
                      code_paths=[str(BERT_PACKAGE)], signature=signature_of(kind, pair),
                      input_example=pd.DataFrame([example]), pip_requirements=requirements())
        return model.model_id

    try:  # not through tracker.call: a model that cannot be logged is not a store that is down
        model_id = log()
    except Exception as err:
        print(f"[{tracker.label}] model not logged: {type(err).__name__}: {err}", file=sys.stderr)
        tracker.unlogged["model"] = tracker.unlogged.get("model", 0) + 1
        return None
    if model_id:
        location = tracker.call("model", lambda: tracker.client.get_logged_model(model_id).artifact_location)
        if location and location.startswith("file:"):
            from urllib.parse import unquote, urlparse

            folder = Path(unquote(urlparse(location).path))
            try:
                link_to_dvc_cache(tracker.root, folder)
            except Exception as err:  # the model is logged; only its bytes are stored twice
                print(f"[{tracker.label}] model files kept as copies: {err}", file=sys.stderr)
    return model_id


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_to_dvc_cache(root: Path, folder: Path) -> dict[str, int]:
    """Replace each file under `folder` that DVC's cache holds by a link to the cached file (module docstring).

    Returns:
        {"linked": bytes now shared with the cache, "copied": bytes left as copies}.
    """
    from pipeline.dvcgraph import cache_files

    files = {p: _md5(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}
    cached, _ = cache_files(root, sorted(set(files.values()))) if files else ({}, [])
    done = {"linked": 0, "copied": 0}
    for path, md5 in files.items():
        size = path.stat().st_size
        source = cached.get(md5)
        if source is None or source.stat().st_size != size:
            done["copied"] += size
            continue
        # a hard link only to a read-only object: the logged file must not be a way to edit DVC's cache
        for how in ["reflink"] + (["hardlink"] if not source.stat().st_mode & 0o222 else []):
            try:
                with atomic_path(path) as temporary:  # the copy stays unless the link is whole
                    if how == "hardlink":
                        os.link(source, temporary)
                    else:  # a reflink: the temporary shares the cached file's bytes copy-on-write
                        with open(source, "rb") as src, open(temporary, "wb") as dst:
                            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            except OSError:
                continue
            done["linked"] += size
            break
        else:
            done["copied"] += size
    return done
