"""Real data: MRPC from ../shared/data with the packaged MiniLM, through the pipeline's stages.

The same settings as HF transformers' run_glue reference (3 epochs, lr 5e-5, batch 32,
max_seq_length 128), which reaches dev accuracy 78.9 / F1 86.0 with this model. We must reach at
least 78 / 85. The stages run in-process in dvc.yaml's order, from params.yaml with these keys set:

    tasks: [mrpc]   seeds: [42]   data.source: local   data.local_dir: ../shared/data/glue/MRPC
    tokenize.max_seq_length: 128   finetune: {epochs: 3.0, learning_rate: 5.0e-5, global_batch_size: 32,
                                              precision: bf16}

bf16 autocast (as the README's MRPC command) where the CPU has native bf16 matmuls (AVX512-BF16 or AMX):
about half the time of fp32, which keeps the suite under 10 minutes. Elsewhere bf16 is emulated and
slower than fp32, so fp32 runs there; both have reached the bar here (bf16 on one thread: 80.6 / 86.6).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from stages import convert, download, evaluate, finetune, tokenize

REPO = Path(__file__).resolve().parents[1]
SEED = 42

pytestmark = [pytest.mark.slow, pytest.mark.longest]
PRECISION = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def test_mrpc_dev_accuracy_and_f1(tmp_path, shared_data):
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values.update(tasks=["mrpc"], seeds=[SEED])
    values["model"]["name"] = "minilm-l6-h384-uncased"
    values["data"].update(source="local", local_dir=str(shared_data / "glue" / "MRPC"))
    values["tokenize"]["max_seq_length"] = 128
    values["finetune"].update(epochs=3.0, learning_rate=5e-5, global_batch_size=32, precision=PRECISION)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    p = ["--params", str(tmp_path / "params.yaml")]
    r = lambda rel: str(tmp_path / rel)  # noqa: E731
    start = time.perf_counter()
    assert download.main(["--task", "mrpc", "--out", r("raw"), *p]) == 0
    assert convert.main(["--out", r("pretrained"), *p]) == 0
    assert tokenize.main(["--task", "mrpc", "--data", r("raw"), "--model", r("pretrained"), "--out", r("features"), *p]) == 0
    assert finetune.main(["--task", "mrpc", "--seed", str(SEED), "--features", r("features"), "--model", r("pretrained"),
                          "--out", r("model"), "--history", r("history.json"), "--work", r("work"), *p]) == 0
    assert evaluate.main(["--task", "mrpc", "--features", r("features"), "--data", r("raw"), "--model", r("model"),
                          "--out", r("eval"), *p]) == 0
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics, training = record["metrics"], record["training"]
    print(f"\nMRPC dev (seed {SEED}, {PRECISION}): acc {metrics['acc']:.2f} F1 {metrics['f1']:.2f}; "
          f"{training['global_steps']} steps, {training['seconds']:.0f} s training "
          f"({training['sequences_per_second']:.1f} seq/s), {time.perf_counter() - start:.0f} s in all")
    assert record["dev_examples"] == 408 and training["train_examples"] == 3668
    assert metrics["acc"] >= 78.0 and metrics["f1"] >= 85.0, metrics
