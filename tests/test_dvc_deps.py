"""dvc.yaml's code deps are the code each stage executes: computed from the code, checked, and seen by DVC.

- every stage of dvc.yaml and pretrain/dvc.yaml lists exactly its import closure (pipeline.deps), the
  guard against a hand-kept list drifting from the imports;
- the closure reader on a tiny synthetic package, and `write` on a synthetic dvc.yaml;
- the real `dvc` on a tiny copy of the project (tests/test_dvc_pipeline.py's): which stages a change
  to the optimizer, a metric or the tokenizer makes DVC re-run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.deps import Project, audit, entry_modules, main, problems, write
from test_dvc_pipeline import _repro, tiny_project

REPO = Path(__file__).resolve().parents[1]
TASK, SEED = "demo-pair", 7  # tiny_project's


# --- the project's own dvc.yaml files -------------------------------------------------------------------


def test_every_stage_lists_exactly_the_code_it_executes():
    lines = problems(audit(REPO))
    assert not lines, "\n".join(lines) + "\n(fix: python -m pipeline.deps write)"


def _renderers(root: Path) -> set[str]:
    """The files of the report stage that write its HTML."""
    report = next(s for s in audit(root) if (s.dvcfile, s.name) == ("dvc.yaml", "report"))
    return {f for f in report.closure if "<!DOCTYPE html>" in (root / f).read_text(encoding="utf-8")}


def test_the_report_rendering_code_is_a_dep_of_the_report_only():
    """Editing the report's HTML edits a .py file that only the report executes: it never retrains."""
    renderers = _renderers(REPO)
    assert renderers, "no file of the report stage writes the HTML"
    for stage in audit(REPO):
        if (stage.dvcfile, stage.name) != ("dvc.yaml", "report"):
            assert not renderers & set(stage.closure), f"{stage.name} executes the report's rendering code"


@pytest.mark.slow
def test_the_static_closure_holds_every_module_importing_a_stage_loads():
    """A cross-check of the static reader: each stage's entry modules, imported in a fresh interpreter
    state, load no project file outside the stage's closure (run-time function imports come on top)."""
    script = textwrap.dedent("""
        import importlib, json, sys
        from pathlib import Path
        from pipeline.deps import _Pipeline, dvc_files, entry_modules
        root, report = Path.cwd().resolve(), {}
        pipeline = _Pipeline(root)
        tops = {"bert", "stages", "pipeline"}
        for dvcfile in dvc_files(root):
            for name, body, workdir in pipeline.stages(dvcfile, pipeline.load(dvcfile)[1]):
                closure = set(pipeline.closure(body, workdir))
                for module in [m for m in sys.modules if m.partition(".")[0] in tops]:
                    del sys.modules[module]  # torch and the other libraries stay loaded: only ours re-run
                for entry in entry_modules(body["cmd"]):
                    importlib.import_module(entry)
                loaded = {Path(m.__file__).resolve().relative_to(root).as_posix() for k, m in list(sys.modules.items())
                          if k.partition(".")[0] in tops and getattr(m, "__file__", None)}
                report[f"{dvcfile.relative_to(root)}:{name}"] = sorted(loaded - closure)
        print(json.dumps(report))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outside = {stage: files for stage, files in json.loads(proc.stdout.splitlines()[-1]).items() if files}
    assert not outside, f"loaded but not in the static closure: {outside}"


# --- the closure reader on a synthetic package ------------------------------------------------------------


def _files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """repo/ with a package `app` (run as `python -m app.main`), a lazy-export package, a wrapper;
    outside_mod.py lives beside repo/, outside it."""
    root = tmp_path / "repo"
    _files(root, {
        "app/__init__.py": "from .core import VERSION\n",
        "app/core.py": "VERSION = 1\n",
        "app/main.py": """
            from __future__ import annotations
            import importlib
            import json
            from typing import TYPE_CHECKING

            import outside_mod
            from . import helpers
            from .sub import leaf
            from lazypkg import Thing
            if TYPE_CHECKING:
                from app.typing_only import Hint

            def run():
                from app.later import late  # a function-level import may run: it counts
                return importlib.import_module("app.plugin")
        """,
        "app/helpers.py": "",
        "app/sub/__init__.py": "",
        "app/sub/leaf.py": "from ..deep import value\n",
        "app/deep.py": "value = 1\n",
        "app/later.py": "late = 1\n",
        "app/plugin.py": "",
        "app/typing_only.py": "Hint = int\n",
        "app/unused.py": "",
        "lazypkg/__init__.py": """
            import importlib
            _EXPORTS = {"Thing": "lazypkg.impl", "Other": "lazypkg.other"}

            def __getattr__(name):
                return getattr(importlib.import_module(_EXPORTS[name]), name)
        """,
        "lazypkg/impl.py": "Thing = 1\n",
        "lazypkg/other.py": "Other = 2\n",
        "wrap.py": "import subprocess\n",
    })
    _files(tmp_path, {"outside_mod.py": "import app.unused\n"})  # outside the repo: not read, not a dep
    return root


def test_the_closure_follows_every_kind_of_import(synthetic):
    closure = Project(synthetic).closure(["app.main"])
    assert [p.relative_to(synthetic).as_posix() for p in closure] == [
        "app/__init__.py", "app/core.py",  # the package's __init__ runs before app.main, and imports core
        "app/deep.py",  # `from ..deep import value` in app/sub/leaf.py
        "app/helpers.py",  # `from . import helpers`: a submodule
        "app/later.py",  # a function-level import
        "app/main.py",
        "app/plugin.py",  # importlib.import_module("app.plugin")
        "app/sub/__init__.py", "app/sub/leaf.py",  # `from .sub import leaf`
        "lazypkg/__init__.py", "lazypkg/impl.py",  # `from lazypkg import Thing`: the module that defines it only
    ]  # not app/typing_only.py (TYPE_CHECKING), app/unused.py (only the outside module imports it)


def test_a_lazy_export_made_by_a_helper_and_read_as_an_attribute_counts(tmp_path):
    """bert/_lazy.py's form: `__getattr__` assigned from a helper; here with a relative module name."""
    _files(tmp_path, {
        "lazy/__init__.py": """
            from helper import lazy_exports
            _EXPORTS = {"Thing": ".impl"}
            __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
        """,
        "lazy/impl.py": "",
        "lazy/unused.py": "",
        "helper.py": "",
        "user.py": "import lazy\nprint(lazy.Thing)\n",
    })
    closure = Project(tmp_path).closure(["user"])
    assert [p.relative_to(tmp_path).as_posix() for p in closure] == [
        "helper.py", "lazy/__init__.py", "lazy/impl.py", "user.py"]


def test_the_entry_modules_of_a_command():
    assert entry_modules("python -m pipeline.track -- torchrun --nproc_per_node ${finetune.nproc} -m stages.finetune "
                         "--task ${item.task} --out models/finetuned/${item.task}") == ["pipeline.track",
                                                                                      "stages.finetune"]
    assert entry_modules('python3.11 -u -m a.b --runs "reports/{task}" -m x && /usr/bin/python -m c') == ["a.b", "c"]
    assert entry_modules(["python -m a", "echo -m b"]) == ["a"]


DVC_YAML = """\
# the header comment stays
stages:
  prepare:
    foreach: ${tasks}
    do:
      cmd: python -m wrap -- python -m app.main --task ${item}
      deps:
        - app/unused.py  # stale: the stage never runs it
        - data/raw/${item}  # a data dep keeps its comment
        - app/sub
      outs:
        - data/out/${item}

  bare:
    cmd: >-
      python -m lazypkg
      --flag
    outs:
      - out
"""


def test_write_lists_the_closure_and_keeps_data_deps_and_comments(synthetic):
    (synthetic / "dvc.yaml").write_text(DVC_YAML, encoding="utf-8")
    assert problems(audit(synthetic)) == [
        "dvc.yaml:prepare: missing app/__init__.py, app/core.py, app/deep.py, app/helpers.py, app/later.py, "
        "app/main.py, app/plugin.py, app/sub/__init__.py, app/sub/leaf.py, lazypkg/__init__.py, lazypkg/impl.py, "
        "wrap.py; listed but not executed app/sub, app/unused.py",
        "dvc.yaml:bare: missing lazypkg/__init__.py",
    ]
    assert write(synthetic) == [synthetic / "dvc.yaml"]
    assert (synthetic / "dvc.yaml").read_text(encoding="utf-8") == DVC_YAML.replace(
        """\
        - app/unused.py  # stale: the stage never runs it
        - data/raw/${item}  # a data dep keeps its comment
        - app/sub
""", "".join(f"        - {f}\n" for f in [
            "app/__init__.py", "app/core.py", "app/deep.py", "app/helpers.py", "app/later.py", "app/main.py",
            "app/plugin.py", "app/sub/__init__.py", "app/sub/leaf.py", "lazypkg/__init__.py", "lazypkg/impl.py",
            "wrap.py"]) + "        - data/raw/${item}  # a data dep keeps its comment\n").replace(
        "      --flag\n", "      --flag\n    deps:\n      - lazypkg/__init__.py\n")
    assert problems(audit(synthetic)) == [] and write(synthetic) == []  # written once: nothing left to do


def test_the_command_line(synthetic, capsys):
    (synthetic / "dvc.yaml").write_text(DVC_YAML, encoding="utf-8")
    assert main(["check", "--root", str(synthetic)]) == 1
    assert capsys.readouterr().out.startswith("dvc.yaml:prepare: missing app/__init__.py")
    assert main(["why", "prepare", "app/deep.py", "--root", str(synthetic)]) == 0
    assert capsys.readouterr().out == "app/main.py -> app/sub/leaf.py -> app/deep.py\n"
    assert main(["write", "--root", str(synthetic)]) == 0
    assert capsys.readouterr().out == "wrote dvc.yaml\n2 stages: code deps match their commands' import closures\n"


# --- the real dvc: what a change re-runs -------------------------------------------------------------------

ITEMS = {"download": f"download@{TASK}", "convert": "convert", "tokenize": f"tokenize@{TASK}",
         "finetune": f"finetune@{TASK}-{SEED}", "baseline": f"baseline@{TASK}", "evaluate": f"evaluate@{TASK}-{SEED}",
         "report": "report", "predict": f"predict@{TASK}"}  # dvc.yaml's stages -> their one item in the tiny project
CHANGED = ("bert/optimization.py", "bert/tasks/metrics.py", "bert/tokenization.py")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, minilm_dir) -> Path:
    """The tiny project after one full `dvc repro`: every stage up to date."""
    repo = tiny_project(tmp_path_factory.mktemp("deps"), minilm_dir)
    assert _repro(repo) == set(ITEMS.values())
    return repo


def _edit(path: Path):
    """Append a line to a file: a change to its content, as a real edit would make."""
    path.write_text(path.read_text(encoding="utf-8") + "\n_CHANGED = True\n", encoding="utf-8")


@pytest.fixture(scope="module")
def reruns(reproduced) -> dict[str, tuple[set[str], set[str]]]:
    """changed file -> (the stages DVC finds changed, those plus every stage downstream of them), from
    `dvc repro --dry` without and with --force-downstream on the reproduced copy (file restored after)."""
    result = {}
    for name in CHANGED:
        path = reproduced / name
        before = path.read_bytes()
        _edit(path)
        try:
            result[name] = (_repro(reproduced, "--dry"), _repro(reproduced, "--dry", "--force-downstream"))
        finally:
            path.write_bytes(before)
    assert _repro(reproduced, "--dry") == set()  # restored: up to date again
    return result


@pytest.mark.slow
@pytest.mark.xdist_group("dvc")
@pytest.mark.parametrize("changed", CHANGED)
def test_dvc_reruns_exactly_the_stages_that_execute_a_changed_file(reproduced, reruns, changed):
    executing = {ITEMS[s.name] for s in audit(reproduced) if s.dvcfile == "dvc.yaml" and changed in s.listed}
    direct, onward = reruns[changed]
    assert direct == executing  # nothing upstream, nothing beside
    assert direct <= onward


@pytest.mark.slow
@pytest.mark.xdist_group("dvc")
@pytest.mark.parametrize("changed, expected", [
    ("bert/optimization.py", {"finetune", "evaluate", "report", "predict"}),
    ("bert/tasks/metrics.py", {"evaluate", "baseline", "report", "predict"}),
    ("bert/tokenization.py", {"tokenize", "finetune", "baseline", "evaluate", "report", "predict"}),
])
def test_a_library_change_reruns_only_the_stages_that_use_it(reruns, changed, expected):
    """The issue's claims: the optimizer is finetune's, a metric the evaluation's, the tokenizer tokenize's
    (each with everything downstream)."""
    assert reruns[changed][1] == {ITEMS[s] for s in expected}


@pytest.mark.slow
@pytest.mark.xdist_group("dvc")
def test_editing_the_report_html_reruns_the_report_only_as_the_dry_run_says(reproduced, reruns):
    """A real `dvc repro` runs what `--dry` reports (checked once by hand downstream too: a stage runs
    when its code changed, or when an upstream stage's outs came out different; byte-identical ones skip)."""
    del reruns  # computed first: this test leaves the copy changed
    for name in _renderers(reproduced):
        _edit(reproduced / name)
    dry = _repro(reproduced, "--dry", "--force-downstream")
    assert dry == {ITEMS["report"], ITEMS["predict"]}  # predict reads the report's metrics.json (predict.model best)
    assert _repro(reproduced) == {ITEMS["report"]}  # whose bytes came out the same: predict skips
