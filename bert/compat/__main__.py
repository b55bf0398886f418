"""``python -m bert.compat``: run old pytorch-pretrained-bert code on this package.

    python -m bert.compat run script.py ARGS...       run a script with pytorch_pretrained_bert -> bert
    python -m bert.compat run -m pytest tests/ ...    the same for a module
    python -m bert.compat path                        print the folder to put on PYTHONPATH instead
    python -m bert.compat install-command             add a `pytorch_pretrained_bert` command to this
                                                      environment (never over an existing one)
"""

from __future__ import annotations

import os
import runpy
import stat
import sys
import sysconfig
from pathlib import Path

from bert.compat import ALIAS_PATH
from bert.io.fileio import atomic_path

COMMAND = "pytorch_pretrained_bert"


def _run(args: list[str]) -> int:
    if not args or (args[0] == "-m" and len(args) < 2):
        print("usage: python -m bert.compat run (SCRIPT | -m MODULE) [ARGS...]", file=sys.stderr)
        return 2
    if args[0] != "-m" and not Path(args[0]).is_file():
        print(f"python -m bert.compat run: error: {args[0]}: no such script", file=sys.stderr)
        return 2
    # Children (torchrun workers, pytest-xdist, ...) inherit the alias through PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ALIAS_PATH, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, ALIAS_PATH)
    for name in [m for m in sys.modules if m == COMMAND or m.startswith(COMMAND + ".")]:
        del sys.modules[name]  # a real pytorch_pretrained_bert imported by something earlier
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path.insert(0, str(Path(args[0]).resolve().parent))  # as `python script.py` does
        runpy.run_path(args[0], run_name="__main__")
    return 0


def install_command() -> int:
    """Write a `pytorch_pretrained_bert` launcher beside this interpreter's scripts, unless one exists
    (the original package's own command, say: it is left alone)."""
    target = Path(sysconfig.get_path("scripts")) / COMMAND
    if target.exists():
        print(f"{target} exists; left as it is (use `bert convert_tf_checkpoint_to_pytorch ...` or "
              f"`python -m bert.compat run -m {COMMAND} ...`)", file=sys.stderr)
        return 1
    with atomic_path(target) as tmp:
        tmp.write_text(f"#!{sys.executable}\n# Installed by bert-toolkit: python -m bert.compat install-command\n"
                       "import sys\nfrom bert.compat.cli import main\nsys.exit(main())\n", encoding="utf-8")
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(target)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return _run(argv[1:])
    if argv == ["path"]:
        print(ALIAS_PATH)
        return 0
    if argv == ["install-command"]:
        return install_command()
    print(__doc__.strip(), file=sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
