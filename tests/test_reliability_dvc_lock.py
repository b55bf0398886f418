"""Two ``dvc repro`` of the same target at once in a temporary copy of the repo: the second is refused
by DVC's locks, the first finishes, and nothing is corrupted (``dvc status`` re-hashes every output
against dvc.lock).

DVC releases its repo lock while a stage's command runs and guards the stage's outputs with a
read/write lock instead: a second repro then skips what is done and is refused at the running stage
("... is busy, it is being blocked by: (PID n) ..."); between commands the repo lock refuses it
("Unable to acquire lock"). (A second repro of *other* stages may run beside the first: that is DVC's
design, not a fault.)

A tiny setup: a random 2-layer BERT as model.name, one demo task, 32 examples. The target is the data
half of the DAG (download, convert, tokenize) plus a ``hold`` stage added to the copy's dvc.yaml that
waits for a file the test writes only after the second repro has answered: the overlap is certain
however fast or loaded the machine is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reliability_helpers import FAULT, changed, snapshot, tally
from test_dvc_pipeline import _copy_repo, _tiny_model

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc")]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "BERT_TRACKING": "off"}


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _add_hold_stage(repo: Path, release: Path) -> None:
    """A last stage after tokenize that waits (at most 5 minutes) until ``release`` exists."""
    script = release.with_name("hold.py")
    script.write_text(f"import pathlib, sys, time\nf = pathlib.Path({str(release)!r})\n"
                      "deadline = time.monotonic() + 300\n"
                      "while not f.exists() and time.monotonic() < deadline:\n    time.sleep(0.1)\n"
                      "sys.exit(0 if f.exists() else 1)\n")
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"]["hold"] = {"cmd": f"python {script} && echo held > held.txt",
                                  "deps": ["data/features/demo-pair"], "outs": ["held.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def test_second_dvc_repro_is_refused_and_nothing_is_corrupted(tmp_path, minilm_dir):
    with tally(FAULT, "two dvc repro at once") as rec:
        repo = tmp_path / "repo"
        repo.mkdir()
        _copy_repo(repo)
        _tiny_model(tmp_path / "tiny-bert", minilm_dir / "vocab.txt")
        values = yaml.safe_load((repo / "params.yaml").read_text())
        values["tasks"], values["seeds"] = ["demo-pair"], [1]
        values["model"]["name"] = str(tmp_path / "tiny-bert")
        values["data"]["builtin"].update(train_examples=32, dev_examples=16)
        (repo / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        release = tmp_path / "release"
        _add_hold_stage(repo, release)

        first = subprocess.Popen([str(BIN / "dvc"), "repro", "hold"], cwd=repo, env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            started = ""
            for line in first.stdout:
                started += line
                if "Running stage 'hold'" in line:
                    break
            assert "Running stage 'hold'" in started, started
            began = time.monotonic()
            second = _dvc(repo, "repro", "hold")
            refused_while_running = first.poll() is None
            release.write_text("go")
            rest, _ = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        output = started + rest
        assert refused_while_running, "the first repro ended before the second was tried: no overlap to test"
        said = second.stdout + second.stderr
        assert second.returncode != 0, said
        # DVC's repo lock ("Unable to acquire lock") or its read/write lock on the outputs the first is
        # writing ("... is busy, it is being blocked by: (PID n): dvc repro ..."); either way no stage ran.
        assert "Unable to acquire lock" in said or re.search(r"is busy, it is being blocked by:\s+\(PID \d+\)", said), said
        assert "Running stage" not in said, said
        assert time.monotonic() - began < 120  # refused at once, not queued behind the first
        assert first.returncode == 0, output[-3000:]
        ran = set(re.findall(r"Running stage '([^']+)'", output))
        assert ran == {"download@demo-pair", "convert", "tokenize@demo-pair", "hold"}, output[-2000:]

        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        before = snapshot(repo / "data")
        status = _dvc(repo, "status", "tokenize@demo-pair")
        after = snapshot(repo / "data")
        damaged = changed(before, after) + ([] if "up to date" in status.stdout else [status.stdout])
        rec["lost"] = len(damaged)
        assert set(lock["stages"]) >= ran and status.returncode == 0, status.stdout + status.stderr
        assert not damaged, damaged


def test_an_output_edited_in_place_never_changes_dvcs_cache(tmp_path):
    """[#19 M12] The repo's cache link types: a hard link (or symlink) into the cache would let an in-place edit of an
    output (as root, past the cache's read-only bits) rewrite the cached object under its old hash."""
    import configparser

    with tally(FAULT, "an output edited in place (as root) under the repo's .dvc/config cache.type") as rec:
        config = configparser.ConfigParser()
        config.read(Path(__file__).resolve().parents[1] / ".dvc" / "config")
        types = config["cache"]["type"].strip('"')
        assert _dvc(tmp_path, "init", "--no-scm", "-q").returncode == 0
        assert _dvc(tmp_path, "config", "cache.type", types).returncode == 0
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {
            "cmd": "printf hello > out.txt", "outs": ["out.txt"]}}}))
        done = _dvc(tmp_path, "repro", "-q")
        assert done.returncode == 0, done.stdout + done.stderr
        with open(tmp_path / "out.txt", "r+b") as out:  # root writes through the cache's read-only bits
            out.write(b"HELLO")
        (cached,) = [p for p in (tmp_path / ".dvc" / "cache").rglob("*") if p.is_file()]
        rec["lost"] = int(cached.read_bytes() != b"hello")
        assert rec["lost"] == 0, f"the cache object of 'hello' now holds {cached.read_bytes()!r} (cache.type {types})"
        assert "modified" in _dvc(tmp_path, "status").stdout
