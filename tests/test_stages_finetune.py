"""The training stages' glue (stages._lib.training): params -> TrainConfig, the checkpoint folder's
fingerprint, history streaming; and the report's rows for real tasks (published figures, flags)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bert.engine import TrainConfig
from stages._lib import training
from stages._lib.params import load_section, section_keys
from stages.finetune import FinetuneParams
from stages.pretrain import PretrainParams
from stages.report import _results_table, summarize_task

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_every_finetune_key_reaches_the_engine():
    params = load_section("finetune", FinetuneParams, REPO_PARAMS)
    changed = dataclasses.replace(params, epochs=1.5, learning_rate=3e-5, global_batch_size=24, grad_accum_steps=3,
                                  warmup_proportion=0.2, weight_decay=0.0, max_grad_norm=0.5, precision="bf16",
                                  optimizer="adamw", schedule="warmup_cosine", log_every=7, checkpoint_every=9,
                                  resume=False, group_by_length=False, num_workers=1, eval_every=3, select="best",
                                  patience=2)
    cfg = changed.train_config(seed=11)
    assert type(cfg) is TrainConfig
    for f in dataclasses.fields(TrainConfig):
        if f.name != "seed":
            assert getattr(cfg, f.name) == getattr(changed, f.name), f.name
    assert cfg.seed == 11


def test_training_sections_are_the_engines_config():
    """finetune and pretrain hold TrainConfig's fields (with its checks), but what the engine keeps to itself."""
    engine = {f.name for f in dataclasses.fields(TrainConfig)} - {"min_loss_scale", "keep_checkpoints"}
    assert set(section_keys(FinetuneParams)) == engine - {"seed"} | {"nproc"}
    evaluation = {"eval_every", "select", "patience"}  # evaluation during training is fine-tuning's
    assert set(section_keys(PretrainParams)) == engine - evaluation | {"nproc", "eval_batch_size"}
    assert issubclass(FinetuneParams, TrainConfig) and issubclass(PretrainParams, TrainConfig)


def test_the_resume_fingerprint_ignores_what_changes_no_weight():
    cfg = TrainConfig()
    for change in ({"log_every": 1}, {"checkpoint_every": 7}, {"num_workers": 2}, {"resume": False},
                   {"grad_accum_steps": 4}):
        assert dataclasses.replace(cfg, **change).trajectory() == cfg.trajectory(), change
    for change in ({"learning_rate": 1e-3}, {"seed": 1}, {"epochs": 2.0}, {"group_by_length": False},
                   {"eval_every": 3}, {"eval_every": 3, "select": "best"}, {"eval_every": 3, "patience": 2}):
        assert dataclasses.replace(cfg, **change).trajectory() != cfg.trajectory(), change


def test_checkpoints_kept_only_for_the_same_run(tmp_path):
    work = tmp_path / "work"
    run1, run2 = ({"stage": "finetune", "train_config": {"lr": lr}} for lr in (1, 2))
    training.prepare_work_dir(work, "finetune", run1)
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "step-4.pt").write_text("x")
    training.prepare_work_dir(work, "finetune", run1)  # same run, resumed: kept
    assert (work / "checkpoints" / "step-4.pt").is_file()
    training.prepare_work_dir(work, "finetune", run2)  # other settings: a stale checkpoint must not be resumed
    assert sorted(p.name for p in work.iterdir()) == ["fingerprint.json"]
    assert json.loads((work / "fingerprint.json").read_text()) == {"stage": "finetune", "train_config": {"lr": 2}}


def test_history_stream(tmp_path, monkeypatch):
    monkeypatch.delenv(training.HISTORY_STREAM_ENV, raising=False)
    assert training.history_streamer() is None
    stream = tmp_path / "stream.jsonl"
    monkeypatch.setenv(training.HISTORY_STREAM_ENV, str(stream))
    append = training.history_streamer()
    append({"step": 5, "loss": 0.5})
    append({"step": 10, "loss": 0.25})
    assert [json.loads(line) for line in stream.read_text().splitlines()] == [{"step": 5, "loss": 0.5},
                                                                            {"step": 10, "loss": 0.25}]


def _run(acc, f1, counts):
    return {"primary": "f1", "metrics": {"acc": acc, "f1": f1}, "predicted_counts": counts, "training": None,
            "eval_seconds": 1.0, "eval_sequences_per_second": 400.0, "dev_examples": 408}


def test_report_rows_for_mrpc():
    baseline = {"metrics": {"acc": 40.0, "f1": 30.0}, "majority": {"class": "1", "metrics": {"acc": 68.38, "f1": 81.22}}}
    runs = {1: _run(80.0, 86.0, [100, 308]), 2: _run(68.38, 81.22, [0, 408]), 3: _run(69.0, 81.5, [10, 398])}
    summary = summarize_task("mrpc", runs, baseline, tolerance=1.0)
    assert summary["fine_tuned"]["f1"]["mean"] == (86.0 + 81.22 + 81.5) / 3
    assert summary["gain_over_untrained"] == summary["fine_tuned"]["f1"]["mean"] - 30.0
    assert [f["seed"] for f in summary["flagged_runs"]] == [2, 3]  # one class only; within 1 point of majority
    assert "single class" in summary["flagged_runs"][0]["why"]
    table = _results_table({"mrpc": summary}, [1, 2, 3])
    first = table.rows[0]
    assert first[:2] == ["mrpc", "**f1**"] and first[2].startswith("82.91 ± ")
    assert "F1 88.9 (GLUE test) [Devlin et al. 2019" in first[-1] and "acc 78.9 / F1 86.0" in first[-1]
