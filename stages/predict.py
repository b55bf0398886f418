"""Stage predict: a task's test split through its fine-tuned model, written as the benchmark takes it.

    python -m stages.predict --task mrpc --data data/raw/mrpc --models models/finetuned/mrpc \
        --report reports/chosen.json --out predictions/mrpc

Which model: ``predict.model`` is ``best`` (the trial the report chose for the task: ``chosen`` in
reports/chosen.json, as in metrics.json) or ``seed<N>`` (that seed's model, N one of params.yaml's seeds). The
model folder says how it reads inputs (its task entry, written by finetune: max_seq_length, windows, SQuAD's
strides), and bert.inference.Predictor predicts exactly as ``bert predict`` does. Writes into ``--out``:

    GLUE      <Task>.tsv as the GLUE server takes it (bert.tasks.glue.write_submission): CoLA.tsv, SST-2.tsv,
              MRPC.tsv, STS-B.tsv, QQP.tsv, MNLI-m.tsv, MNLI-mm.tsv, QNLI.tsv, RTE.tsv, WNLI.tsv; the mnli model
              also writes AX.tsv from the diagnostic set (diagnostic.tsv beside MNLI's files)
    SQuAD     predictions.json, {question id: answer} as the official evaluate-v1.1/v2.0.py read it ("" when
              SQuAD 2.0's null answer wins); the questions of the predict file: the task's test file when
              the data folder has one, else its dev file (SQuAD's test set is hidden: CodaLab runs a predictor
              on it, as run_squad.py's --predict_file does on dev)
    SWAG      predictions.csv as swagaf's leaderboard predictor writes it (rowanz/swagaf csv_predict.py at
              c0e2e8a: pandas' to_csv of a "pred" column): a header ",pred", then "<row>,<ending index>"
    demo-*    the format of the task they imitate, named for the demo task (demo-pair.tsv, ...)
    datasets  your own task (params.yaml's datasets): predictions.jsonl, one line per test row as ``bert predict``
              writes them (its id and text, the label and each label's probability; a regression's score)
    summary.json  the task, the seed and folder used, the file read, the examples and the files written

A task whose data folder has no test file (a local copy without it) gets only summary.json, saying so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bert.engine.precision import PRECISIONS
from bert.inference.inputs import ChoiceInput, QuestionInput, TextInput
from bert.inference.predictor import Predictor
from bert.io.fileio import atomic_write_text
from bert.io.settings import SettingError, at_least, one_of
from bert.tasks import TaskKind, TaskSpec, glue
from bert.tasks.glue import GlueProcessor
from bert.tasks.owndata import OwnDataProcessor
from bert.tasks.squad import read_squad_examples
from bert.tasks.swag import read_swag_examples
from stages._lib.common import atomic_outputs, read_json, require_input, run_stage, stage_parser, write_json
from stages._lib.evaluation import EvaluateParams
from stages._lib.params import DEFAULT_PARAMS, load_section
from stages._lib.search import setting_folder
from stages._lib.tasks import DEMO_FORMATS, get_task, recorded_labels

logger = logging.getLogger("stages.predict")
MODEL_CHOICE = re.compile(r"best|seed(0|[1-9][0-9]*)")
SUMMARY = "summary.json"
OWN_PREDICTIONS = "predictions.jsonl"  # your own task's predictions: bert predict's output lines
AX_FILE = "diagnostic.tsv"  # GLUE's diagnostic set, downloaded beside MNLI's files


@dataclass(frozen=True)
class PredictParams:
    """Section ``predict``."""

    model: str  # "best" (the report's chosen seed) or "seed<N>"
    batch_size: int = field(metadata=at_least(1))
    precision: str = field(metadata=one_of(*PRECISIONS))

    def __post_init__(self) -> None:
        if not MODEL_CHOICE.fullmatch(self.model):
            raise SettingError("model", f"expected best or seed<N> (e.g. seed1), got {self.model!r}")

    @property
    def seed(self) -> Optional[int]:
        """The fixed seed of ``seed<N>``; None for ``best``."""
        return None if self.model == "best" else int(self.model[4:])


def model_folder(models: Path, task: str, params: PredictParams, report: Path) -> tuple[Path, int]:
    """The fine-tuned folder that predicts `task`, and its seed: ``<models>/<setting>/seed<N>`` (stages._lib.search),
    the setting the report chose from the search grid, N its choice (``best``) or the params' seed."""
    seed = params.seed
    summary = read_json(report, "report", dict) if seed is None or report.is_file() else {}
    chosen = summary.get(task, {}).get("chosen")
    if seed is None:
        if not isinstance(chosen, dict) or not isinstance(chosen.get("seed"), int):
            raise ValueError(f"{report}: no chosen run for {task} (the report's metrics.json has none); run the "
                             "report stage, or set predict.model to seed<N>")
        seed = chosen["seed"]
    setting = chosen.get("setting") if isinstance(chosen, dict) and isinstance(chosen.get("setting"), dict) else {}
    folder = models / setting_folder(seed, setting)
    require_input(folder / "config.json", "finetune", f"model of {task} seed {seed}")
    return folder, seed


def submission_name(task: str, processor: GlueProcessor) -> str:
    """The GLUE file name (MRPC.tsv), or the demo task's own (demo-pair.tsv): it is not MRPC's."""
    return f"{task}.tsv" if task in DEMO_FORMATS else processor.submission_name


def predict_glue(predictor: Predictor, processor: GlueProcessor, path: Path, out: Path, name: str) -> int:
    """Predict one GLUE test file into the submission file `out/name`; returns the examples predicted."""
    examples = processor.read(path, "test")
    records = predictor.predict([TextInput(e.index, e.text_a, e.text_b) for e in examples])
    if processor.labels is None:
        values = [r["score"] for r in records]
    else:
        values = [processor.labels.index(r["label"]) for r in records]
    glue.write_submission(dataclasses.replace(processor, submission_name=name), examples, values, out)
    return len(examples)


def predict_squad(predictor: Predictor, spec: TaskSpec, path: Path, out: Path) -> int:
    """SQuAD: {question id: answer} of every question of `path` as out/predictions.json."""
    examples = read_squad_examples(path, False, spec.processor.version_2_with_negative)
    # a context re-split on whitespace gives back its doc_tokens: the predictor sees the words the reader saw
    records = predictor.predict([QuestionInput(e.qas_id, e.question_text, " ".join(e.doc_tokens)) for e in examples])
    write_json(out / "predictions.json", {r["id"]: r["answer"] for r in records})
    return len(examples)


def predict_swag(predictor: Predictor, spec: TaskSpec, path: Path, out: Path) -> int:
    """SWAG: the chosen ending of every row of `path` as out/predictions.csv (",pred" then "row,index")."""
    examples = read_swag_examples(path, is_training=False)
    records = predictor.predict([ChoiceInput(e.swag_id, e.context_sentence, tuple(e.endings), e.start_ending)
                                 for e in examples])
    rows = [",pred", *(f"{i},{r['choice']['index']}" for i, r in enumerate(records))]
    atomic_write_text(out / "predictions.csv", "\n".join(rows) + "\n")
    return len(examples)


def predict_own(predictor: Predictor, processor: OwnDataProcessor, path: Path, out: Path) -> int:
    """Your own task's test split (the normalised test.jsonl) as out/predictions.jsonl, bert predict's lines."""
    examples = processor.get_examples(path.parent, "test")
    records = predictor.predict([TextInput(e.guid, e.text_a, e.text_b) for e in examples])
    atomic_write_text(out / OWN_PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(examples)


def predict_file(spec: TaskSpec, data: Path) -> tuple[Optional[Path], str]:
    """The file of `data` the stage predicts and its split ("test"; SQuAD: "dev" without a test file), or
    (None, why) when there is none."""
    files = spec.processor.files
    if "test" in files and (data / files["test"]).is_file():
        return data / files["test"], "test"
    if spec.kind is TaskKind.SQUAD:
        return require_input(data / files["dev"], "download", f"dev file of {spec.name}"), "dev"
    return None, f"{data} has no test file ({files.get('test', 'none is known for the task')})"


def predict(task: str, data: Path, models: Path, report: Path, out: Path, params: PredictParams,
            answers: EvaluateParams, params_file: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Write `task`'s predictions into the (empty) folder `out`; returns the summary.json record."""
    require_input(data, "download", f"raw data of {task}")
    spec = get_task(task, params_file, labels=recorded_labels(data))
    folder, seed = model_folder(models, task, params, report)
    record: dict[str, Any] = {"task": task, "seed": seed, "model": str(folder), "files": {}}
    path, split = predict_file(spec, data)
    if path is None:
        logger.warning("%s: no predictions: %s", task, split)
        return {**record, "skipped": split}
    predictor = Predictor(folder, precision=params.precision, batch_size=params.batch_size,
                          n_best=answers.n_best_size, max_answer_length=answers.max_answer_length,
                          null_score_diff_threshold=answers.null_score_diff_threshold)
    record.update(split=split, source=str(path))
    if spec.kind is TaskKind.SQUAD:
        record["files"]["predictions.json"] = predict_squad(predictor, spec, path, out)
    elif isinstance(spec.processor, OwnDataProcessor):
        record["files"][OWN_PREDICTIONS] = predict_own(predictor, spec.processor, path, out)
    elif spec.kind is TaskKind.MULTIPLE_CHOICE:
        record["files"]["predictions.csv"] = predict_swag(predictor, spec, path, out)
    else:
        name = submission_name(task, spec.processor)
        record["files"][name] = predict_glue(predictor, spec.processor, path, out, name)
        if task == "mnli" and (data / AX_FILE).is_file():  # the diagnostic set is predicted by the MNLI model
            record["files"][glue.AX.submission_name] = predict_glue(predictor, glue.AX, data / AX_FILE, out,
                                                                    glue.AX.submission_name)
    return record


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("predict", __doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, type=Path, help="the task's raw data folder (stage download)")
    parser.add_argument("--models", required=True, type=Path, help="the task's fine-tuned models: seed<N> folders")
    parser.add_argument("--report", required=True, type=Path,
                        help="the report's chosen.json or metrics.json (predict.model: best)")
    parser.add_argument("--out", required=True, type=Path, help="the folder for the submission files")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("predict", PredictParams, args.params)
        answers = load_section("evaluate", EvaluateParams, args.params)  # SQuAD answers as evaluate finds them
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            record = predict(args.task, args.data, args.models, args.report, tmp, params, answers, args.params)
            write_json(tmp / SUMMARY, record)
        written = ", ".join(f"{name} ({n} rows)" for name, n in record["files"].items()) or "nothing"
        logger.info("%s seed %s: %s -> %s", args.task, record["seed"], written, args.out)

    return run_stage("predict", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
