"""Issue 19's 33 defects each have a test: a test function whose docstring cites it as ``[#19 M4]``.

The citation is the durable map from the issue to its tests (``grep -n "#19 M4" tests/``): each cited test
exercises exactly that defect and failed on the code before its fix. Only docstrings of test functions
count (parsed with ast), not comments or helpers, so the map cannot point at something that never runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ISSUE_19 = ([f"H{n}" for n in range(1, 6)] + [f"M{n}" for n in range(1, 15)] + [f"L{n}" for n in range(1, 15)])
CITATION = re.compile(r"\[#19 ([HML]\d+)\]")


def cited() -> dict[str, list[str]]:
    """Item -> the tests citing it ("file::function")."""
    found: dict[str, list[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                for item in CITATION.findall(ast.get_docstring(node) or ""):
                    found.setdefault(item, []).append(f"{path.name}::{node.name}")
    return found


def test_every_item_of_issue_19_is_cited_by_a_test():
    assert len(ISSUE_19) == 33
    found = cited()
    missing = [item for item in ISSUE_19 if item not in found]
    assert not missing, f"issue 19 items no test function's docstring cites as [#19 ID]: {', '.join(missing)}"
    unknown = sorted(set(found) - set(ISSUE_19))
    assert not unknown, f"citations of items issue 19 does not have: {unknown} in {[found[u] for u in unknown]}"
