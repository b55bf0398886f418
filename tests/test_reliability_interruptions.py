"""Interruptions: SIGKILL mid-download, mid-tokenize and mid-finetune; an MLflow server that dies mid-run.

Each run is a real child process killed with SIGKILL at a known point (a slow server, or a hook that
pauses the stage there and says so); then the work is redone and compared with an uninterrupted run:
- download: the rerun asks only for the missing bytes (a Range request) and the sha256 holds;
- tokenize: no output under its final name after the kill; the rerun's cache is byte-identical;
- finetune: the rerun resumes from the last checkpoint and ends with the same weights (<= 1e-6).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reliability_helpers import (FAULT, REPO, child_env, finetune_args, finetune_inputs, slow_server, snapshot,
                                 tally, wait_for, write_params)

pytestmark = pytest.mark.xdist_group("reliability-kills")  # timing-sensitive: not beside the other kill tests


def _spawn(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=child_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill(proc: subprocess.Popen) -> str:
    """SIGKILL the child (and anything it started); returns its stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
    return err


def _only_temp_left(folder: Path) -> bool:
    """Nothing in `folder` but the hidden temp folders a killed atomic write leaves (never a final name)."""
    names = {p.split("/")[0] for p in snapshot(folder)} if folder.exists() else set()
    return all(n.startswith(".") and n.endswith(".tmp") for n in names)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Download.

DOWNLOAD = ("import sys; from bert.io.download import download; "
            "download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], progress=False)")


def test_sigkill_during_download_then_resume(tmp_path):
    from bert.io.download import download

    with tally(FAULT, "SIGKILL during a download; the rerun resumes") as rec:
        payload = os.urandom(3 << 20)  # 3 MiB at ~1 MiB/s
        server = slow_server({"/model.zip": payload}, chunk=32768, delay=0.03)
        dest = tmp_path / "cache" / "model.zip"
        part = dest.with_name("model.zip.part")
        try:
            proc = _spawn(["-c", DOWNLOAD, server.url + "/model.zip", str(dest), _sha256(payload)])
            reached = wait_for(lambda: part.is_file() and part.stat().st_size > 512 << 10, timeout=120)
            _kill(proc)
            assert reached, "the download never started"
            kept = part.stat().st_size
            assert 0 < kept < len(payload) and not dest.exists()  # only the .part, never a half file
            server.delay = 0.0
            assert download(server.url + "/model.zip", dest, sha256=_sha256(payload), progress=False) == dest
        finally:
            server.stop()
        rec["lost"] = int(dest.read_bytes() != payload)
        assert rec["lost"] == 0 and not part.exists()
        assert server.log[-1] == ("/model.zip", f"bytes={kept}-"), server.log  # only the missing bytes


def test_sigkill_during_the_download_stage_then_resume(tmp_path, shared_data, monkeypatch):
    """``stages.download --task mrpc`` from a mirror: killed mid-file, rerun, GLUE's sha256s hold."""
    from stages import download
    from stages._lib.sources import SOURCES
    from test_stages_download import _mrpc_raw_files

    with tally(FAULT, "SIGKILL during the download stage (MRPC); the rerun resumes") as rec:
        www = tmp_path / "www"
        www.mkdir()
        _mrpc_raw_files(shared_data, www)
        files = {f"/mrpc/{p.name}": p.read_bytes() for p in (www / "mrpc").iterdir()}
        server = slow_server(files, chunk=8192, delay=0.02)
        cache, out = tmp_path / "cache", tmp_path / "data" / "mrpc"
        params = write_params(tmp_path / "params.yaml", **{"source: builtin": "source: download",
                                                           'mirror: ""': f"mirror: {server.url}"})
        part = cache / "data" / "mrpc" / "msr_paraphrase_train.txt.part"
        try:
            proc = _spawn(["-m", "stages.download", "--params", str(params), "--task", "mrpc", "--out", str(out)],
                          BERT_TOOLKIT_CACHE=str(cache))
            reached = wait_for(lambda: part.is_file() and part.stat().st_size > 64 << 10, timeout=120)
            _kill(proc)
            assert reached, "the download never started"
            kept = part.stat().st_size
            assert not out.exists() and _only_temp_left(out.parent)
            server.delay = 0.0
            monkeypatch.setenv("BERT_TOOLKIT_CACHE", str(cache))
            assert download.main(["--params", str(params), "--task", "mrpc", "--out", str(out)]) == 0
        finally:
            server.stop()
        digests = {name: _sha256((out / name).read_bytes()) for name in SOURCES["mrpc"].expected}
        rec["lost"] = sum(digests[n] != d for n, d in SOURCES["mrpc"].expected.items())
        assert rec["lost"] == 0, digests  # byte for byte GLUE's train/dev/test.tsv
        assert ("/mrpc/msr_paraphrase_train.txt", f"bytes={kept}-") in server.log


# ----------------------------------------------------------------------------------------------
# Tokenize: pause after the N-th split written (in the temp folder), get killed there.

PAUSING_TOKENIZE = """
import sys, time
import stages.tokenize as stage
real, written = stage.write_cache, []
def write_then_pause(*args, **kwargs):
    out = real(*args, **kwargs)
    written.append(args[0])
    if len(written) == int(sys.argv[1]):
        print("PAUSED", flush=True)
        time.sleep(600)  # the test kills us here
    return out
stage.write_cache = write_then_pause
sys.exit(stage.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def qa_inputs(tmp_path_factory):
    from stages import download

    root = tmp_path_factory.mktemp("qa")
    params = write_params(root / "params.yaml", **{"train_examples: 512": "train_examples: 64",
                                                   "dev_examples: 200": "dev_examples: 32"})
    assert download.main(["--params", str(params), "--task", "demo-qa", "--out", str(root / "raw")]) == 0
    return root


@pytest.mark.parametrize("splits_written", [1, 2], ids=["after train", "after dev, before the rename"])
def test_sigkill_during_tokenize(tmp_path, qa_inputs, minilm_dir, splits_written):
    from stages import tokenize

    with tally(FAULT, f"SIGKILL during tokenize ({splits_written} of 2 splits written)") as rec:
        args = ["--params", str(qa_inputs / "params.yaml"), "--task", "demo-qa", "--data", str(qa_inputs / "raw"),
                "--model", str(minilm_dir)]
        out = tmp_path / "features" / "demo-qa"
        proc = _spawn(["-c", PAUSING_TOKENIZE, str(splits_written), *args, "--out", str(out)])
        paused = proc.stdout.readline().strip() == "PAUSED"
        _kill(proc)
        assert paused, "the stage never reached the pause"
        assert not out.exists() and _only_temp_left(out.parent), "a killed tokenize left output under its final name"
        assert any(out.parent.iterdir()), "the killed stage left no temporary: nothing to clean up was tested"
        assert tokenize.main([*args, "--out", str(out)]) == 0
        assert sorted(p.name for p in out.parent.iterdir()) == ["demo-qa"], "the killed run's temporary stayed"
        assert tokenize.main([*args, "--out", str(tmp_path / "reference")]) == 0
        differ = sorted(set(snapshot(out).items()) ^ set(snapshot(tmp_path / "reference").items()))
        rec["lost"] = len(differ)
        assert not differ, differ  # byte-identical cache: manifest, tensors, metadata


# ----------------------------------------------------------------------------------------------
# Finetune: slowed per batch, killed once a mid-epoch checkpoint exists, resumed in-process.

SLOW_FINETUNE = """
import sys, time
import stages.finetune as stage
real = stage.pad_collate
def slow_collate(*args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return real(*args, **kwargs)
stage.pad_collate = slow_collate
sys.exit(stage.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def ft_inputs(tmp_path_factory, minilm_dir):
    return finetune_inputs(tmp_path_factory.mktemp("ft"), minilm_dir / "vocab.txt")


@contextlib.contextmanager
def _one_thread():
    """As the killed child ran (OMP_NUM_THREADS=1), so that sums are made in the same order."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def test_sigkill_during_finetune_then_exact_resume(tmp_path, ft_inputs, caplog):
    from bert.engine.checkpoint import list_checkpoints
    from stages import finetune

    with tally(FAULT, "SIGKILL mid-epoch during finetune; the rerun resumes exactly") as rec:
        out, work = tmp_path / "run" / "model", tmp_path / "run-work"
        proc = _spawn(["-c", SLOW_FINETUNE, "0.2", *finetune_args(ft_inputs, out, work)])
        reached = wait_for(lambda: any(step >= 6 for step, _ in list_checkpoints(work)), timeout=180)
        _kill(proc)
        assert reached, "no checkpoint before the kill"
        resumed_from = list_checkpoints(work)[-1][0]
        # mid-epoch (12 steps per epoch; a checkpoint every 2), nothing published
        assert 6 <= resumed_from < 24 and resumed_from % 12 and _only_temp_left(out.parent)
        with _one_thread(), caplog.at_level("INFO"):
            assert finetune.main(finetune_args(ft_inputs, out, work)) == 0
            assert f"at step {resumed_from} of 24" in caplog.text
            ref_out = tmp_path / "ref" / "model"
            assert finetune.main(finetune_args(ft_inputs, ref_out, tmp_path / "ref-work")) == 0
        got, want = load_file(str(out / "model.safetensors")), load_file(str(ref_out / "model.safetensors"))
        assert got.keys() == want.keys()
        diff = max(float((got[k] - want[k]).abs().max()) for k in got)
        history = [h["loss"] for h in json.loads(Path(f"{out}.history.json").read_text())]
        ref_history = [h["loss"] for h in json.loads(Path(f"{ref_out}.history.json").read_text())]
        rec["lost"] = int(diff > 1e-6) + int(len(history) != len(ref_history))
        print(f"resumed at step {resumed_from}: max |weight difference| {diff:.3g}")
        assert diff <= 1e-6 and len(history) == 24
        assert max(abs(a - b) for a, b in zip(history, ref_history)) <= 1e-6
        assert not (work / "checkpoints").exists()  # dropped once the run completed


# ----------------------------------------------------------------------------------------------
# An MLflow server that dies while a tracked finetune runs.


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _count(db: Path, sql: str) -> int:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_mlflow_server_dies_mid_run(tmp_path, ft_inputs):
    """Training finishes with all its outputs; the tracker says once that MLflow went away, and what it lost."""
    pytest.importorskip("mlflow")
    with tally(FAULT, "MLflow server SIGKILLed while a tracked finetune runs") as rec:
        db, port = tmp_path / "mlflow.db", _free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{db}",
             "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        stage = None
        try:
            assert wait_for(lambda: _healthy(url), timeout=180, interval=0.5), "mlflow server did not start"
            out = tmp_path / "run" / "model"
            stage = subprocess.Popen(
                [sys.executable, "-m", "pipeline.track", "--stage", "finetune@demo-pair-1", "--", sys.executable,
                 "-c", SLOW_FINETUNE, "0.3", *finetune_args(ft_inputs, out, tmp_path / "work")],
                cwd=tmp_path, env=child_env(BERT_TRACKING="on", MLFLOW_TRACKING_URI=url), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True)
            logged = "select count(*) from metrics where key = 'loss'"
            assert wait_for(lambda: _count(db, logged) >= 2, timeout=180, interval=0.2), "no point reached MLflow"
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            _, err = stage.communicate(timeout=300)
        finally:
            for proc in (server, stage):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        history = json.loads(Path(f"{out}.history.json").read_text()) if Path(f"{out}.history.json").is_file() else []
        rec["lost"] = int(stage.returncode != 0) + int(not (out / "model.safetensors").is_file()) + int(len(history) != 24)
        assert rec["lost"] == 0, err[-3000:]
        lines = err.splitlines()
        assert len([x for x in lines if "is unavailable" in x]) == 1, err[-3000:]
        (summary,) = [x for x in lines if "not logged to MLflow" in x]
        found = re.search(r"(\d+) metric points|metric points", summary)  # "metric points" alone: one
        unlogged = (int(found.group(1)) if found.group(1) else 1) if found else 0
        points = sum(1 for record in history for key, value in record.items()
                     if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool))
        in_db = _count(db, "select count(*) from metrics")
        print(f"{in_db} metric points reached MLflow before it died; the tracker reports {unlogged} lost: {summary}")
        # At least everything missing (a batch the server stored just before dying may be counted as lost too).
        assert points - in_db <= unlogged <= points


# ----------------------------------------------------------------------------------------------
# The MLflow wrapper of a stage (pipeline.track): its scratch folder does not outlive a kill.


def test_sigkill_of_the_stage_wrapper_leaves_no_scratch_behind(tmp_path):
    """[#19 L12] The wrapper's history stream lives in a temporary folder; a killed wrapper's (a killed `dvc repro`)
    stayed in /tmp forever. The next tracked stage removes it."""
    with tally(FAULT, "SIGKILL of pipeline.track mid-stage: the next tracked stage removes its scratch folder") as rec:
        temp, project = tmp_path / "tmp", tmp_path / "project"
        temp.mkdir()
        (project / ".dvc").mkdir(parents=True)  # the project root: MLflow's store goes there
        env = {"TMPDIR": str(temp), "BERT_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
        flag = tmp_path / "started"
        stage = f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(120)"
        wrapper = subprocess.Popen([sys.executable, "-m", "pipeline.track", "--stage", "convert", "--",
                                    sys.executable, "-c", stage], cwd=project, env=child_env(**env),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert wait_for(flag.exists, timeout=180), wrapper.communicate(timeout=30)[1][-2000:]
            left = sorted(p.name for p in temp.iterdir())
            assert left, "no scratch folder while the stage ran"
        finally:
            _kill(wrapper)  # the wrapper and the stage under it, as a killed dvc repro's process group
        done = subprocess.run([sys.executable, "-m", "pipeline.track", "--stage", "convert", "--", sys.executable,
                               "-c", "pass"], cwd=project, env=child_env(**env), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        rec["lost"] = len([name for name in left if (temp / name).exists()])
        assert rec["lost"] == 0, f"the killed wrapper's scratch is still there: {left}"
