"""The import graph of bert/: no cycles (function-level imports counted, so that a lazy import cannot hide
one), the layering of ../shared/DESIGN.md, and a light public face (``import bert`` and ``bert --help`` load
no model code and no torch).

The graph is read statically by pipeline.deps (the reader that computes dvc.yaml's deps).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.deps import Project

REPO = Path(__file__).resolve().parents[1]
PROJECT = Project(REPO)
LIBRARY = sorted(p for p in (REPO / "bert").rglob("*.py") if "alias_path" not in p.parts)


def _edges(path: Path) -> set[Path]:
    """The bert/ files importing `path` may execute directly (each module and the packages above it)."""
    found = set()
    for name in PROJECT.imported_modules(path):
        found.update(f for f in PROJECT.executed_by_import(name) if f in set(LIBRARY) and f != path)
    return found


def _cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Strongly connected components of more than one file (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_library_has_no_import_cycle():
    graph = {path: _edges(path) for path in LIBRARY}
    cycles = [" <-> ".join(str(p.relative_to(REPO)) for p in cycle) for cycle in _cycles(graph)]
    assert not cycles, "import cycles in bert/ (function-level imports included):\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_one():
    a, b, c = Path("a.py"), Path("b.py"), Path("c.py")
    assert _cycles({a: {b}, b: {c}, c: {a}}) == [[a, b, c]]
    assert _cycles({a: {b}, b: set(), c: {c}}) == []


def test_layering():
    """bert/ imports neither stages/ nor pipeline/ nor HF transformers; the model, the tokenizer and the
    optimizer do not reach bert/tasks/ (../shared/DESIGN.md)."""
    outward = [f"{p.relative_to(REPO)} imports {name}" for p in LIBRARY for name in PROJECT.imported_modules(p)
               if name.partition(".")[0] in ("stages", "pipeline")]
    outward += [f"{p.relative_to(REPO)} imports transformers" for p in LIBRARY
                if "import transformers" in p.read_text() or "from transformers" in p.read_text()]
    assert not outward, outward
    for face in ("bert.modeling", "bert.tokenization", "bert.optimization"):
        reached = [p.relative_to(REPO) for p in PROJECT.closure([face]) if "bert/tasks" in str(p)]
        assert not reached, f"{face} reaches {reached}"


def test_import_bert_and_bert_help_load_no_model_code():
    probe = textwrap.dedent("""
        import sys
        import bert
        assert bert.__version__
        from bert.cli.commands import main
        assert main(["--help"]) == 0
        heavy = sorted(m for m in sys.modules if m in ("torch", "numpy", "bert.modeling", "bert.tokenization"))
        print("loaded:", heavy)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("loaded: []"), result.stdout


def test_no_lazy_export_is_shadowed_by_a_submodule_of_its_name():
    """A package's lazy export named like one of its submodules (bert.engine.predict was both) turns into the
    module once anything imports the submodule: `from bert.engine import predict` then depended on import order."""
    import importlib
    import pkgutil

    clashes = []
    for package in ("bert", *(f"bert.{m.name}" for m in pkgutil.iter_modules([str(REPO / "bert")]) if m.ispkg)):
        module = importlib.import_module(package)
        exports = getattr(module, "_EXPORTS", {})
        submodules = {m.name for m in pkgutil.iter_modules(module.__path__)}
        clashes += [f"{package}.{name}" for name in exports if name in submodules]
    assert not clashes, f"lazy exports named like a submodule: {clashes}"
