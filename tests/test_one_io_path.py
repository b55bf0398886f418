"""One output-writing path, one JSON reader: no module of bert/, stages/ or pipeline/ writes a file, makes a
temporary or parses JSON by hand ([#19] "close the classes").

The owners are bert/io/fileio.py (atomic_path, atomic_write_text/bytes, move_into_place, scratch_folder) and
bert/io/jsonfile.py (read_json, read_json_object, parse_json). Elsewhere, found by parsing each file (ast):

- a raw JSON read: ``json.load(...)``, ``json.loads(...)`` (or ``load``/``loads`` imported from json);
- a raw write: ``X.write_text(...)``, ``X.write_bytes(...)``, ``open(P, MODE)`` or ``X.open(MODE)`` with a
  mode that writes (w, a, x, +), ``shutil.copy*/copytree/move(SRC, DST)``, ``torch.save(OBJ, DST)``,
  ``save_file(TENSORS, DST)`` (safetensors), ``fig.savefig(DST)``;
- a raw temporary: ``tempfile.<anything but gettempdir>``.

A write is the one path when its target is the temporary that an enclosing ``with atomic_path(...) as tmp``
or ``with scratch_folder(...) as tmp`` (or the stages' ``atomic_outputs``) yields, or a path built from it in
that block. Anything else must be
in ALLOWED below, keyed by file and function (not by line, so edits elsewhere do not move it), with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bert", "stages", "pipeline")
OWNERS = {"bert/io/fileio.py", "bert/io/jsonfile.py"}
SAFE_CONTEXTS = {"atomic_path", "scratch_folder", "atomic_outputs"}  # atomic_outputs: the stages' atomic_path
# a library call that writes a file -> the position of its target argument
WRITERS = {"copy": 1, "copyfile": 1, "copy2": 1, "copytree": 1, "move": 1, "save": 1, "save_file": 1, "savefig": 0}
WRITE_MODE = set("wax+")

# (file, enclosing function, kind) -> why it stays as it is
ALLOWED: dict[tuple[str, str, str], str] = {
    ("stages/_lib/training.py", "history_streamer.append", "write"):
        "appends JSON lines to a stream pipeline.track tails while training runs: replacing it would lose the "
        "tail's offset; it is scratch of the tracker, not an output",
    ("bert/formats/tf_writer.py", "write_checkpoint", "write"):
        "TF's two checkpoint files are written into the caller's scratch_folder, then each renamed into place "
        "by atomic_path (write_tf_checkpoint); the docstring says so",
    ("bert/inference/inputs.py", "_choice_list", "json"):
        "a TSV/CSV cell holding a JSON list, not a file: its error names file:line and the column",
    ("pipeline/flow.py", "changed_stages", "json"):
        "the stdout of `dvc status --json`, not a file",
    ("pipeline/track.py", "HistoryTail.read", "json"):
        "tails a JSON-lines stream still being written: a partial line is skipped, not an error",
    ("bert/io/download.py", "_fetch_once", "write"):
        "the .part a download appends to (resumed after a kill); move_into_place publishes it when complete",
    ("bert/io/archive.py", "_copy_member.write", "write"):
        "a member streamed to its own hidden sibling (its declared size enforced), renamed when whole; the "
        "extraction itself is inside the caller's scratch_folder or atomic_path",
}


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def _names(node: Optional[ast.AST]) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node is not None else set()


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _mode(call: ast.Call, position: int, unknown: Optional[str] = "?") -> Optional[str]:
    """The mode argument of an open call ("?" when it is not a literal, None when there is none)."""
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else unknown
    if len(call.args) > position:
        arg = call.args[position]
        return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else unknown
    return None


class _Finder(ast.NodeVisitor):
    """Collects (line, function, kind, target names) of each raw read, write and temporary of one module."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str, str, str]] = []
        self.scope: list[str] = []
        self.safe: list[set[str]] = [set()]  # names bound to an atomic/scratch temporary, per open with-block
        self.json_names = {"json"}
        self.json_functions: set[str] = set()
        self.tempfile_names = {"tempfile"}

    # imports: `import json as j`, `from json import loads`, `import tempfile as t`
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "json":
                self.json_names.add(alias.asname or "json")
            if alias.name == "tempfile":
                self.tempfile_names.add(alias.asname or "tempfile")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "json":
            self.json_functions |= {a.asname or a.name for a in node.names if a.name in ("load", "loads")}
        if node.module == "tempfile":
            for alias in node.names:
                if alias.name != "gettempdir":
                    self.found.append((node.lineno, self._where(), "temp", f"from tempfile import {alias.name}"))

    def _where(self) -> str:
        return ".".join(self.scope) or "<module>"

    def _scoped(self, node: ast.AST) -> None:
        self.scope.append(node.name)
        self.safe.append(set())
        self.generic_visit(node)
        self.safe.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_With(self, node: ast.With) -> None:
        bound = set(self.safe[-1])
        self.safe.append(bound)
        for item in node.items:
            self.visit(item.context_expr)  # a later item may use an earlier one's name: open(tmp, "w")
            call = item.context_expr
            if isinstance(call, ast.Call) and _call_name(call) in SAFE_CONTEXTS and item.optional_vars is not None:
                bound |= _names(item.optional_vars)
        for statement in node.body:
            self.visit(statement)
        self.safe.pop()

    visit_AsyncWith = visit_With

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        if _names(node.value) & self.safe[-1]:  # a path built from the temporary: settings = Path(tmp, NAME)
            for target in node.targets:
                self.safe[-1] |= _names(target)

    def _is_safe(self, target: Optional[ast.AST]) -> bool:
        return bool(_names(target) & self.safe[-1])

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func, name = node.func, _call_name(node)
        where = self._where()
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in self.json_names
                and name in ("load", "loads")) or (isinstance(func, ast.Name) and name in self.json_functions):
            self.found.append((node.lineno, where, "json", f"json.{name}"))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                func.value.id in self.tempfile_names and name != "gettempdir":
            self.found.append((node.lineno, where, "temp", f"tempfile.{name}"))
        elif isinstance(func, ast.Attribute) and name in ("write_text", "write_bytes"):
            if not self._is_safe(func.value):
                self.found.append((node.lineno, where, "write", f".{name}()"))
        elif isinstance(func, ast.Name) and name == "open":
            mode = _mode(node, 1)
            if mode is not None and set(mode) & (WRITE_MODE | {"?"}) and not self._is_safe(node.args[0] if node.args
                                                                                             else None):
                self.found.append((node.lineno, where, "write", f"open(..., {mode!r})"))
        elif name in WRITERS and (isinstance(func, ast.Name) or (
                isinstance(func, ast.Attribute) and (name != "save" or _names(func.value) & {"torch"}))):
            at = WRITERS[name]
            target = node.args[at] if len(node.args) > at else None
            if target is not None and not self._is_safe(target):
                self.found.append((node.lineno, where, "write", f"{name}(...)"))
        elif isinstance(func, ast.Attribute) and name == "open":
            # Path.open("w"); tarfile.open(name), ZipFile.open(info), os.open(path, flags) take no literal mode
            mode = _mode(node, 0, unknown=None)
            if mode is not None and set(mode) & WRITE_MODE and not self._is_safe(func.value):
                self.found.append((node.lineno, where, "write", f".open({mode!r})"))


def raw_io(path: Path) -> Iterator[tuple[str, int, str, str, str]]:
    """(file, line, function, kind, what) of each raw JSON read, write or temporary in `path`."""
    rel = path.relative_to(REPO).as_posix()
    finder = _Finder()
    finder.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    for line, where, kind, what in finder.found:
        yield rel, line, where, kind, what


def test_no_raw_json_read_or_file_write_outside_the_owners():
    """Issue 19's classes closed: one output-writing path, one JSON reader that names its file, temporaries
    that a killed process cannot leave behind."""
    used, problems = set(), []
    for path in python_files():
        if path.relative_to(REPO).as_posix() in OWNERS:
            continue
        for rel, line, where, kind, what in raw_io(path):
            key = (rel, where, kind)
            if key in ALLOWED:
                used.add(key)
                continue
            fix = {"json": "bert.io.jsonfile.read_json / parse_json", "write": "bert.io.fileio.atomic_path / "
                   "atomic_write_text", "temp": "bert.io.fileio.scratch_folder"}[kind]
            problems.append(f"{rel}:{line} in {where}: raw {what}; use {fix} (or add it to ALLOWED with a reason)")
    assert not problems, "\n".join(problems)
    assert used == set(ALLOWED), f"ALLOWED entries that match nothing any more: {sorted(set(ALLOWED) - used)}"


def test_the_finder_sees_each_kind():
    """The check itself: each raw form is found, the atomic temporary and its derived paths are not."""
    source = '''
import json, tempfile
from json import loads
def f(out, data):
    json.load(open(out))
    loads("1")
    out.write_text("x")
    open(out, "w")
    open(out, mode="ab")
    out.open("w")
    tempfile.mkdtemp()
    with atomic_path(out) as tmp, open(tmp, "w") as handle:
        part = tmp / "a"
        part.write_bytes(b"")
        (tmp / "b").write_text("")
        out.write_text("outside")
    with scratch_folder(out) as scratch:
        Path(scratch, "c").write_text("")
    open(out)
    tempfile.gettempdir()
    shutil.copyfile(out, out / "x")
    torch.save({}, out)
    with atomic_outputs(out, out) as (first, second):
        torch.save({}, second)
        fig.savefig(first / "a.png")
    model.save(out)
'''
    finder = _Finder()
    finder.visit(ast.parse(source))
    assert [(line, kind) for line, _, kind, _ in finder.found] == [
        (5, "json"), (6, "json"), (7, "write"), (8, "write"), (9, "write"), (10, "write"), (11, "temp"),
        (16, "write"), (21, "write"), (22, "write")]
