"""bin/python, the interpreter dvc.yaml's commands start with: the project's, whatever PATH holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/bin:/bin"  # no venv python here (tests/test_dvc_experiments.py checks it has no torch)


def _launch(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """bin/python of a project at `root` (a copy of the launcher), from a shell whose PATH has no venv."""
    launcher = root / "bin" / "python"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "bin" / "python", launcher)
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/"), **extra}
    return subprocess.run([str(launcher), *args], cwd=root, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_projects_venv_wins_over_path(tmp_path):
    venv_python = tmp_path / ".venv" / "bin" / "python"  # what `make install` leaves: this one, marked
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nBERT_TEST_VENV=yes exec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    done = _launch(tmp_path, "-c", "import os; print(os.environ.get('BERT_TEST_VENV'))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "yes"


def test_bert_python_names_the_interpreter(tmp_path):
    done = _launch(tmp_path, "-c", "import sys; print(sys.executable)", BERT_PYTHON=sys.executable)
    assert done.returncode == 0 and done.stdout.strip() == sys.executable, done.stderr


def test_the_python_running_dvc_is_used_without_a_venv(tmp_path):
    """No .venv: the interpreter of the `dvc` process above the stage (here `python -m dvc`'s look-alike)."""
    parent = ("import subprocess, sys; sys.exit(subprocess.call([sys.argv[1], '-c', "
              "'import sys; print(sys.executable)']))")
    launcher = tmp_path / "bin" / "python"
    _launch(tmp_path, "-c", "")  # puts the launcher in place
    # argv as DVC's own process shows it: `<python> -m dvc exp run`, whose child runs the stage's command
    done = subprocess.run([sys.executable, "-c", parent, str(launcher), "-m", "dvc", "exp", "run"],
                          cwd=tmp_path, env={"PATH": SYSTEM_PATH}, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == sys.executable


def test_no_python_with_the_project_is_one_line(tmp_path):
    done = _launch(tmp_path, "-c", "print('ran')")
    assert done.returncode == 127 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Python with the project installed" in lines[0] and "make install" in lines[0]
