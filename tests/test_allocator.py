"""BERT_ALLOCATOR: the training stages re-execute themselves with tcmalloc (or a given library) preloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stages._lib import allocator
from stages._lib.allocator import ALLOCATOR_ENV, REEXEC_GUARD_ENV, find_tcmalloc, wanted_allocator

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")

# Prints its PID when it starts and after reexec_with_allocator() returns: a re-execution shows as two
# "start" lines with the same PID (execve keeps it).
CHILD = textwrap.dedent("""
    import os, sys
    print("start", os.getpid(), flush=True)
    from stages._lib.allocator import active_allocator, reexec_with_allocator
    reexec_with_allocator()
    print("after", os.getpid(), active_allocator(), sys.argv[1:], flush=True)
""")


def run_child(tmp_path: Path, allocator_choice: str) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", REEXEC_GUARD_ENV)}
    env.update({ALLOCATOR_ENV: allocator_choice, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, str(script), "one", "two"], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory) -> Path:
    """A shared library that does nothing: stands in for tcmalloc where it is not installed."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the stand-in library")
    folder = tmp_path_factory.mktemp("fakelib")
    (folder / "fake.c").write_text("int bert_fake_allocator_marker(void) { return 1; }\n", encoding="utf-8")
    library = folder / "libfakealloc.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(folder / "fake.c")], check=True)
    return library


def test_choices(monkeypatch, tmp_path):
    assert wanted_allocator({ALLOCATOR_ENV: "system"}) is None
    library = tmp_path / "libx.so"
    library.write_bytes(b"")
    assert wanted_allocator({ALLOCATOR_ENV: str(library)}) == str(library)

    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    assert wanted_allocator({}) is None  # auto, nothing installed: the system's malloc
    assert wanted_allocator({ALLOCATOR_ENV: "auto"}) is None
    with pytest.raises(ValueError, match="BERT_ALLOCATOR=tcmalloc, but no tcmalloc.*libtcmalloc-minimal4"):
        wanted_allocator({ALLOCATOR_ENV: "tcmalloc"})

    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    assert wanted_allocator({}) == "libtcmalloc_minimal.so.4"
    assert wanted_allocator({ALLOCATOR_ENV: "tcmalloc"}) == "libtcmalloc_minimal.so.4"


def test_bad_choices_name_the_variable_and_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match=r"BERT_ALLOCATOR='jemallok': expected one of auto, tcmalloc, system"):
        wanted_allocator({ALLOCATOR_ENV: "jemallok"})
    missing = tmp_path / "nope" / "libtcmalloc.so"
    with pytest.raises(ValueError, match=f"BERT_ALLOCATOR={missing}: no such shared library file"):
        wanted_allocator({ALLOCATOR_ENV: str(missing)})


@linux_only
def test_reexecutes_once_with_the_library_preloaded(tmp_path, fake_library):
    done = run_child(tmp_path, str(fake_library))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    starts = [line for line in lines if line.startswith("start")]
    assert len(starts) == 2 and starts[0] == starts[1]  # re-executed once, in the same process
    pid = starts[0].split()[1]
    assert f"after {pid} libfakealloc.so ['one', 'two']" in lines  # arguments kept, library mapped
    assert done.stderr == ""


@linux_only
def test_system_choice_does_not_reexecute(tmp_path):
    done = run_child(tmp_path, "system")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("start") == 1
    assert "system ['one', 'two']" in done.stdout


@linux_only
def test_a_library_that_does_not_load_is_tried_once(tmp_path):
    not_elf = tmp_path / "libbroken.so"
    not_elf.write_text("not a shared library\n", encoding="utf-8")
    done = run_child(tmp_path, str(not_elf))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("start") == 2  # one re-execution, then the guard stops it
    assert "is not mapped: running with the system's malloc" in done.stderr
    assert "system ['one', 'two']" in done.stdout


@linux_only
@pytest.mark.skipif(find_tcmalloc() is None, reason="tcmalloc is not installed (apt install libtcmalloc-minimal4)")
def test_auto_preloads_tcmalloc_when_installed(tmp_path):
    done = run_child(tmp_path, "auto")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("start") == 2
    assert "not mapped" not in done.stderr  # the soname (a link) is recognised as loaded: no second attempt
    assert " libtcmalloc" in done.stdout.split("after", 1)[1]


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_training_stages_check_the_choice_before_anything_else(stage):
    env = {**os.environ, ALLOCATOR_ENV: "fastest"}
    done = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: BERT_ALLOCATOR='fastest': expected one of auto, tcmalloc, system "
                                   "or a path to a shared library")
