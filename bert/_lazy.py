"""Package-level names imported on first use: ``from bert.engine import fit`` works, while importing the
package itself loads none of its modules (so that a submodule may import a sibling without an import cycle
through the package, and light commands stay light)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for a package whose names live in its modules.

    Args:
        package: the package's ``__name__`` (for error messages).
        exports: public name -> the module that defines it.
        namespace: the package's ``globals()``; a name is cached there once imported.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
