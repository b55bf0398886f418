"""Each DVC stage's code deps, computed from its command: exactly the project files the command executes.

    python -m pipeline.deps check    # per stage: files missing from `deps:`, code deps it does not use; exit 1 if any
    python -m pipeline.deps write    # rewrite the code part of every stage's `deps:` (data deps and comments kept)

Why: DVC re-runs a stage when one of its deps changes, so a hand-kept list of code deps that misses a
module (the optimizer, a metric, the tokenizer) makes `dvc repro` call a stale result "up to date";
one that lists a file the stage never runs re-runs it for nothing. Here the list is derived from the code:

- the entry modules of a stage's `cmd`: every `python -m X`, `torchrun ... -m X` and `python -m
  bert.engine.launch ... -m X` (torchrun in-process), the tracking wrapper included (`python -m
  pipeline.track -- python -m stages.tokenize ...` executes both);
- the transitive closure of their project imports, read statically (AST): every `import` and
  `from ... import` anywhere in a file (a function-level import may run), relative imports resolved,
  `from pkg import name` counted as the submodule when `name` is one, a package's `__init__.py` with
  every module under it, literal `importlib.import_module("x")`, and a package's lazy exports (a
  module-level `__getattr__` over a `{"Name": "pkg.module"}` table, as in `bert/__init__.py`).
  Imports under `if TYPE_CHECKING:` never run and are skipped. Modules outside the repo are not deps.

A dep counts as code when it is a `.py` file or a Python package folder of the repo; every other dep
(data, models, reports) is left as written. Paths are files, never folders, so that an unrelated file
added to a folder does not invalidate a stage.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from bert.io.fileio import atomic_write_text

PROGRAM = re.compile(r"torchrun|python[0-9.]*")  # programs whose `-m X` runs module X (python3.11 too)
LAUNCHERS = ("bert.engine.launch",)  # modules that, as torchrun, run the module of a later `-m X`
SKIP_DIRS = ("node_modules", "__pycache__")  # never hold a dvc.yaml; hidden folders and venvs are skipped too


@dataclass(frozen=True)
class StageDeps:
    """One stage of a dvc.yaml (a foreach/matrix stage once: its items share one `deps:` list)."""

    dvcfile: str  # relative to the repo root, e.g. "pretrain/dvc.yaml"
    name: str  # the stage's key in the file, e.g. "finetune"
    closure: tuple[str, ...]  # the project files its command executes, relative to the stage's wdir
    listed: tuple[str, ...]  # the code deps dvc.yaml lists now

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.closure) - set(self.listed))

    @property
    def extra(self) -> list[str]:
        return sorted(set(self.listed) - set(self.closure))


# --- the command -> entry modules ---------------------------------------------------------------------


def entry_modules(cmd: str | list[str]) -> list[str]:
    """The modules a stage command runs with `-m`, in order.

    Args:
        cmd: the stage's `cmd` (a string or a list of commands); `${...}` placeholders may stay in it.
    Returns:
        e.g. ["pipeline.track", "stages.finetune"] for
        `python -m pipeline.track -- torchrun --nproc_per_node ${finetune.nproc} -m stages.finetune ...`.
    """
    modules = []
    for line in [cmd] if isinstance(cmd, str) else cmd:
        tokens = shlex.split(line)
        in_program = False  # between a python/torchrun token and its -m (its own options)
        for i, token in enumerate(tokens):
            if PROGRAM.fullmatch(os.path.basename(token)):
                in_program = True
            elif in_program and token == "-m" and i + 1 < len(tokens):
                modules.append(tokens[i + 1])
                # what follows is the module's arguments (which may hold another program), or a launcher's
                in_program = tokens[i + 1] in LAUNCHERS
            elif token in ("&&", "||", ";", "|"):
                in_program = False
    return modules


# --- the import closure ---------------------------------------------------------------------------------


class Project:
    """Resolves dotted module names to the files of one source root (the folder `python -m` runs in)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._trees: dict[Path, ast.Module] = {}
        self._imports: dict[Path, frozenset[str]] = {}

    def module_file(self, name: str) -> Optional[Path]:
        """`a.b` -> root/a/b.py or root/a/b/__init__.py; None when it is not a module of the project."""
        if not name or not all(part.isidentifier() for part in name.split(".")):
            return None
        base = self.root.joinpath(*name.split("."))
        for path in (base / "__init__.py", base.with_suffix(".py")):  # a package wins, as in Python
            if path.is_file():
                return path
        return None

    def module_name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(path.read_bytes(), filename=str(path))
            except SyntaxError as err:
                raise ValueError(f"{path}:{err.lineno}: cannot parse ({err.msg})") from None
        return self._trees[path]

    def executed_by_import(self, name: str) -> list[Path]:
        """The files `import name` executes itself: each package `__init__.py` on the way, then the module."""
        parts = name.split(".")
        files = [self.module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        return [f for f in files if f is not None]

    def executed_by_run(self, name: str) -> list[Path]:
        """The files `python -m name` executes itself: as an import, plus `__main__.py` for a package."""
        files = self.executed_by_import(name)
        main = self.module_file(f"{name}.__main__") if files and files[-1].name == "__init__.py" else None
        return files + [main] if main is not None else files

    def lazy_exports(self, path: Path) -> dict[str, str]:
        """A module's lazy names, e.g. {"BertAdam": "bert.optimization"}: when it binds a module-level
        `__getattr__` (a def, or assigned from a helper as in bert/_lazy.py), every entry of its dict
        literals that maps a name to a project module (bert/__init__.py's `_EXPORTS`)."""
        tree = self.tree(path)
        if not any("__getattr__" in _bound_names(node) for node in tree.body):
            return {}
        package = self.module_name(path) if path.name == "__init__.py" else self.module_name(path).rpartition(".")[0]
        table = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    name, target = _text(key), _text(value) or ""
                    stripped = target.lstrip(".")  # ".loop" names a module relative to the package
                    target = _absolute(stripped or None, len(target) - len(stripped), package) or ""
                    if name is not None and self.module_file(target):
                        table[name] = target
        return table

    def imported_modules(self, path: Path) -> frozenset[str]:
        """Every project module a file may import, read from its AST (see the module docstring)."""
        if path not in self._imports:
            self._imports[path] = frozenset(self._read_imports(path))
        return self._imports[path]

    def _read_imports(self, path: Path) -> set[str]:
        module = self.module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: set[str] = set()
        bound: dict[str, str] = {}  # local name -> package, for `import bert` ... `bert.BertAdam`
        for node in _runtime_nodes(self.tree(path)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.add(alias.name)
                    top = alias.name.partition(".")[0]  # `import a.b` binds a; `import a.b as c` binds c to a.b
                    bound[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, package)
                if base is None:
                    continue
                found.add(base)
                base_file = self.module_file(base)
                exports = self.lazy_exports(base_file) if base_file is not None else {}
                for alias in node.names:
                    if alias.name == "*":
                        found.update(exports.values())
                    elif self.module_file(f"{base}.{alias.name}") is not None:
                        found.add(f"{base}.{alias.name}")
                    elif alias.name in exports:
                        found.add(exports[alias.name])
            elif isinstance(node, ast.Call) and _dotted(node.func) in ("importlib.import_module", "import_module",
                                                                         "__import__"):
                if node.args and _text(node.args[0]) is not None:
                    found.add(_text(node.args[0]))
        for node in _runtime_nodes(self.tree(path)):  # `bert.BertAdam` after `import bert`
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                target = self.module_file(bound[node.value.id])
                exports = self.lazy_exports(target) if target is not None else {}
                if node.attr in exports:
                    found.add(exports[node.attr])
        return {name for name in found if self.module_file(name) is not None}

    def closure(self, entries: Iterable[str]) -> list[Path]:
        """Every project file that running the entry modules (`python -m entry`) may execute, sorted.

        Args:
            entries: dotted module names, e.g. ["pipeline.track", "stages.finetune"]; names that are not
                modules of the project (`python -m dvc`) contribute nothing.
        Returns:
            Absolute paths of .py files under the root, sorted.
        """
        return sorted(self._graph(entries))

    def chain(self, entries: Iterable[str], target: Path) -> list[Path]:
        """One shortest import chain from an entry module to `target` ([] when it is not in the closure):
        why a stage depends on a file, e.g. [stages/download.py, stages/common.py, bert/engine/__init__.py]."""
        parents = self._graph(entries)
        path: list[Path] = []
        node: Optional[Path] = target.resolve() if target.resolve() in parents else None
        while node is not None:
            path.append(node)
            node = parents[node]
        return path[::-1]

    def _graph(self, entries: Iterable[str]) -> dict[Path, Optional[Path]]:
        """file -> the file whose import first reached it (None for the entries), breadth first."""
        start = [f for name in entries for f in self.executed_by_run(name)]
        parents: dict[Path, Optional[Path]] = dict.fromkeys(start)
        queue = list(parents)
        for path in queue:  # grows while it is read: a breadth-first walk
            for name in sorted(self.imported_modules(path)):
                for found in self.executed_by_import(name):
                    if found not in parents:
                        parents[found] = path
                        queue.append(found)
        return parents


def _text(node: Optional[ast.AST]) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _bound_names(node: ast.stmt) -> set[str]:
    """The names a module-level statement binds (def, class, assignment targets, tuple targets, imports)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).partition(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
        node, (ast.AnnAssign, ast.AugAssign)) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _absolute(module: Optional[str], level: int, package: str) -> Optional[str]:
    """`from ..x import y` in package a.b.c -> "a.b.x" (None when it climbs above the top package)."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):  # Python: "attempted relative import beyond top-level package"
        return None
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, less the bodies of `if TYPE_CHECKING:` (imports for annotations only: never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _dotted(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


# --- dvc.yaml -----------------------------------------------------------------------------------------


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments, key order and block scalars survive (dvc.yaml reads back byte-identical)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    yaml.preserve_quotes = True
    return yaml


def dvc_files(root: str | os.PathLike) -> list[Path]:
    """Every dvc.yaml of the project (hidden folders, venvs and caches skipped), the root's first."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not (Path(folder) / d / "pyvenv.cfg").exists())
        if "dvc.yaml" in files:
            found.append(Path(folder) / "dvc.yaml")
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _dep_path(dep: Any) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else str(dep)  # `- path: {options}` or `- path`


class _Pipeline:
    """The stages of one repo's dvc.yaml files, with one Project per folder a command runs in."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._projects: dict[Path, Project] = {}

    def stages(self, dvcfile: Path, doc: Any) -> Iterator[tuple[str, Any, Path]]:
        """(name, the mapping holding cmd and deps, the folder its command runs in) per stage with a cmd;
        a foreach stage's cmd and deps are under `do:`, a matrix stage's beside `matrix:`."""
        for name, stage in ((doc or {}).get("stages") or {}).items():
            body = stage["do"] if "foreach" in stage else stage
            if "cmd" in body:
                yield name, body, (dvcfile.parent / str(body.get("wdir", "."))).resolve()

    def project(self, workdir: Path) -> Project:
        """`python -m` imports from the folder the command runs in."""
        return self._projects.setdefault(workdir, Project(workdir))

    def closure(self, body: Any, workdir: Path) -> list[str]:
        """The repo files a stage's command executes, relative to its wdir (as its deps are written)."""
        files = self.project(workdir).closure(entry_modules(body["cmd"]))
        return [_rel(f, workdir) for f in files if _inside(f, self.root)]

    def is_code(self, dep: str, workdir: Path) -> bool:
        """A .py file or a Python package folder of the repo (such as the old `bert/engine`): a code dep."""
        if "${" in dep:
            return False
        path = (workdir / dep).resolve()
        return _inside(path, self.root) and (dep.endswith(".py") or (path / "__init__.py").is_file())

    def load(self, dvcfile: Path) -> tuple[Any, Any]:
        """(the round-trip YAML object, the document) of a dvc.yaml."""
        from ruamel.yaml.error import YAMLError

        yaml = _yaml()
        try:
            return yaml, yaml.load(dvcfile.read_text(encoding="utf-8"))
        except YAMLError as err:
            raise ValueError(f"{dvcfile}: not YAML ({err})") from None


def audit(root: str | os.PathLike) -> list[StageDeps]:
    """Every stage of every dvc.yaml under `root`: the code deps its command needs and those it lists.

    Args:
        root: the repo root; only files under it are deps.
    Returns:
        One StageDeps per stage (a foreach/matrix stage once), in file order.
    Raises:
        ValueError: a dvc.yaml or a project module that cannot be parsed (the message names the file).
    """
    pipeline = _Pipeline(root)
    result = []
    for dvcfile in dvc_files(pipeline.root):
        for name, body, workdir in pipeline.stages(dvcfile, pipeline.load(dvcfile)[1]):
            listed = tuple(d for d in map(_dep_path, body.get("deps") or []) if pipeline.is_code(d, workdir))
            result.append(StageDeps(_rel(dvcfile, pipeline.root), name, tuple(pipeline.closure(body, workdir)),
                                    listed))
    return result


def problems(stages: Iterable[StageDeps]) -> list[str]:
    """One line per stage whose listed code deps differ from its closure (none: the deps are truthful)."""
    lines = []
    for stage in stages:
        parts = [f"missing {', '.join(stage.missing)}"] if stage.missing else []
        parts += [f"listed but not executed {', '.join(stage.extra)}"] if stage.extra else []
        if parts:
            lines.append(f"{stage.dvcfile}:{stage.name}: {'; '.join(parts)}")
    return lines


def _replace_code_deps(body: Any, closure: list[str], is_code) -> bool:
    """Put the closure, sorted, in front of a stage's data deps (their comments kept). True if it changed."""
    from ruamel.yaml.comments import CommentedSeq

    old = body.get("deps")
    items = list(old or [])
    data = [i for i, dep in enumerate(items) if not is_code(_dep_path(dep))]
    new = CommentedSeq([*closure, *(items[i] for i in data)])
    if old is not None and list(new) == items:
        return False
    if isinstance(old, CommentedSeq):  # a comment rides with its data item; the list's last comment stays last
        last = len(items) - 1
        for at, i in enumerate(data):
            if i in old.ca.items and i != last:
                new.ca.items[len(closure) + at] = old.ca.items[i]
        if last in old.ca.items and new:
            new.ca.items[len(new) - 1] = old.ca.items[last]
        new.ca.comment = old.ca.comment
    if old is None:
        body.insert(list(body).index("cmd") + 1, "deps", new)
    else:
        body["deps"] = new
    return True


def write(root: str | os.PathLike) -> list[Path]:
    """Rewrite the code deps of every stage of every dvc.yaml under `root` to its closure.

    Returns:
        The dvc.yaml files that changed (each written to a temporary name and renamed into place).
    """
    pipeline = _Pipeline(root)
    changed = []
    for dvcfile in dvc_files(pipeline.root):
        yaml, doc = pipeline.load(dvcfile)
        dirty = False
        for _, body, workdir in pipeline.stages(dvcfile, doc):
            dirty |= _replace_code_deps(body, pipeline.closure(body, workdir),
                                        lambda dep, workdir=workdir: pipeline.is_code(dep, workdir))
        if dirty:
            out = io.StringIO()
            yaml.dump(doc, out)
            atomic_write_text(dvcfile, out.getvalue())
            changed.append(dvcfile)
    return changed


def why(root: str | os.PathLike, stage: str, target: str) -> list[str]:
    """The import chain by which a stage's command reaches a file ([] when it does not).

    Args:
        stage: a stage's name, or "path/to/dvc.yaml:name" outside the root's dvc.yaml.
        target: a file, relative to the stage's wdir.
    Raises:
        ValueError: no such stage.
    """
    pipeline = _Pipeline(root)
    for dvcfile in dvc_files(pipeline.root):
        for name, body, workdir in pipeline.stages(dvcfile, pipeline.load(dvcfile)[1]):
            rel = _rel(dvcfile, pipeline.root)
            if stage in (f"{rel}:{name}", name if rel == "dvc.yaml" else None):
                files = pipeline.project(workdir).chain(entry_modules(body["cmd"]), workdir / target)
                return [_rel(f, workdir) for f in files]
    raise ValueError(f"no stage {stage!r} in {', '.join(_rel(p, pipeline.root) for p in dvc_files(pipeline.root))}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deps", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "write", "why"],
                        help="check: the stages whose code deps differ (exit 1 if any); write: fix them; "
                             "why STAGE FILE: the import chain by which STAGE runs FILE")
    parser.add_argument("args", nargs="*", help="why: STAGE (e.g. finetune, pretrain/dvc.yaml:pretrain) FILE")
    parser.add_argument("--root", default=".", help="the repo root (default: the current folder)")
    args = parser.parse_args(argv)
    if (args.action == "why") != bool(args.args) or (args.args and len(args.args) != 2):
        parser.error("why takes STAGE FILE; check and write take no arguments")
    try:
        if args.action == "why":
            chain = why(args.root, *args.args)
            print(" -> ".join(chain) if chain else f"{args.args[0]} does not execute {args.args[1]}")
            return 0 if chain else 1
        if args.action == "write":
            for path in write(args.root):
                print(f"wrote {_rel(path, Path(args.root).resolve())}")
        stages = audit(args.root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = problems(stages)
    print("\n".join(lines) if lines else f"{len(stages)} stages: code deps match their commands' import closures")
    return 1 if lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
