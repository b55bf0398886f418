"""Multi-process training on CPU (gloo): torchrun, two nodes, the old launcher, SIGKILL + resume.

Every launch is a real launcher process (torchrun / torch.distributed.launch) running
tests/test_engine_helpers.py as the worker; they are few because each costs seconds to start.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest
import torch

from bert.engine import TrainConfig, fit, predict
from test_engine_helpers import (WORKER, ToyDataset, collate, free_port, launch, tiny_model,
                                 torchrun)

pytestmark = [pytest.mark.xdist_group("engine_dist"), pytest.mark.slow]

# 160 examples / global batch 16 = 10 steps per epoch, 20 steps.
BASE = dict(epochs=2.0, learning_rate=1e-3, global_batch_size=16, warmup_proportion=0.1,
            log_every=1, seed=7)
N_TRAIN = 160
TWO_LOCAL = ["--standalone", "--nproc_per_node", "2"]


def _worker_args(settings: dict, work, out) -> list[str]:
    return ["--config", json.dumps(settings), "--work", str(work), "--out", str(out)]


def _load(path):
    return torch.load(path, weights_only=True)


def _max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One node x 2 processes (accumulation 2) and two nodes x 1 process, launched side by side."""
    tmp = tmp_path_factory.mktemp("engine_dist")
    settings = {**BASE, "grad_accum_steps": 2, "dropout": 0.0, "n_train": N_TRAIN}
    port = free_port()
    nodes = [torchrun(["--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
                       "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                       "--rdzv_id", "engine-test", "--local_addr", "127.0.0.1"],
                      _worker_args(settings, tmp / f"nodes{r}", tmp / "nodes.pt")) for r in (0, 1)]
    one_node = torchrun(TWO_LOCAL, _worker_args(settings, tmp / "one_node", tmp / "one_node.pt"))
    done = launch([one_node, *nodes], timeout=240)
    for proc in done:
        assert proc.returncode == 0, proc.stdout[-4000:]
    return {"one_node": _load(tmp / "one_node.pt"), "two_nodes": _load(tmp / "nodes.pt")}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same training in this process: one rank, global batch 16 as 4 micro-batches of 4."""
    model = tiny_model(0.0)
    train = ToyDataset(N_TRAIN, seed=1)
    cfg = TrainConfig(**BASE, grad_accum_steps=4)
    result = fit(model, train, collate, cfg, tmp_path_factory.mktemp("single"), lengths=train.lengths,
                 progress=False)
    return result, model


def test_two_processes_give_the_losses_of_one(runs, single):
    result, model = single
    dist_run = runs["one_node"]
    assert dist_run["world_size"] == 2
    ref = [h["loss"] for h in result.history]
    got = [h["loss"] for h in dist_run["history"]]
    assert len(ref) == len(got) == 20
    diff = max(abs(a - b) for a, b in zip(ref, got))
    print(f"max |loss diff| over 20 steps, 2 processes vs 1: {diff:.3g}")
    assert diff < 1e-4
    wdiff = _max_weight_diff(model.state_dict(), dist_run["state"])
    moved = _max_weight_diff(model.state_dict(), tiny_model(0.0).state_dict())
    assert moved > 1e-3  # the weights did move: this compares two trajectories, not two inits
    print(f"max |weight diff| after 20 steps: {wdiff:.3g} (moved {moved:.3g} from the init)")
    assert wdiff < 1e-4


def test_two_nodes_match_one_node(runs):
    a, b = runs["one_node"], runs["two_nodes"]
    assert b["world_size"] == 2
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a["history"], b["history"]))
    wdiff = _max_weight_diff(a["state"], b["state"])
    print(f"two nodes vs one node: max |loss diff| {diff:.3g}, max |weight diff| {wdiff:.3g}")
    assert len(a["history"]) == len(b["history"]) == 20
    assert diff < 1e-6 and wdiff < 1e-6


def test_sharded_predict_returns_every_example_once_in_order(runs):
    dist_run = runs["one_node"]
    model = tiny_model(0.0)
    model.load_state_dict(dist_run["state"])
    dev = ToyDataset(37, seed=2)  # odd size: one rank gets one example more, none duplicated
    logits, = predict(model, dev, collate, batch_size=5, progress=False)  # in order, one process
    assert dist_run["logits"].shape == (37, 2)
    diff = (logits - dist_run["logits"]).abs().max().item()
    print(f"2-rank predict vs 1-process predict: max |logit diff| {diff:.3g}")
    assert diff < 1e-5


def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    # Dropout on: resuming exactly needs every rank's RNG state back, not just weights and optimizer.
    settings = {**BASE, "grad_accum_steps": 1, "dropout": 0.1, "n_train": N_TRAIN,
                "checkpoint_every": 4}
    killed = torchrun(TWO_LOCAL, _worker_args({**settings, "kill_at": 14}, tmp_path / "run",
                                              tmp_path / "x.pt"))
    reference = torchrun(TWO_LOCAL, _worker_args(settings, tmp_path / "ref", tmp_path / "ref.pt"))
    first, ref = launch([killed, reference], timeout=240)
    assert first.returncode == -signal.SIGKILL, first.stdout[-4000:]
    assert ref.returncode == 0, ref.stdout[-4000:]
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved == ["step-00000012.pt"]  # epoch 2, step 2 of 10: mid-epoch
    assert not (tmp_path / "x.pt").exists()

    # Resume through the old launcher, which passes --local-rank=N on the command line.
    legacy = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2",
              "--master_port", str(free_port()), WORKER,
              *_worker_args(settings, tmp_path / "run", tmp_path / "resumed.pt")]
    resumed, = launch([legacy], timeout=180)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    a, b = _load(tmp_path / "resumed.pt"), _load(tmp_path / "ref.pt")
    assert a["launcher_local_rank"] == 0 and b["launcher_local_rank"] is None
    wdiff = _max_weight_diff(a["state"], b["state"])
    ldiff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a["history"], b["history"]))
    print(f"SIGKILL at step 14, resumed from step 12: max |weight diff| {wdiff:.3g}, "
          f"max |loss diff| {ldiff:.3g} over {len(a['history'])} steps")
    assert a["logged"] == list(range(13, 21)) and b["logged"] == list(range(1, 21))
    assert [h["step"] for h in a["history"]] == list(range(1, 21))
    assert wdiff <= 1e-6 and ldiff <= 1e-6
