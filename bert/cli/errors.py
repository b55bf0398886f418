"""Errors as one line: how every command of the project reports a failure (``--debug`` or BERT_DEBUG=1 for the
traceback)."""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ValueError, OSError, ImportError)) else f"{type(err).__name__}: {text}"


def run_reporting_errors(action: Callable[[], Optional[int]], command: str = "bert", debug: bool = False) -> int:
    """Run `action`, turning an exception into one line on stderr and an exit status.

    Args:
        action: returns the exit status (None: 0).
        command: how the error line starts (``bert convert-tf-checkpoint: error: ...``).
        debug: let the exception (and its traceback) through; also on with BERT_DEBUG=1.
    Returns:
        The exit status: the action's, 1 on an error, 130 on Ctrl-C, 141 when stdout's reader left.
    """
    debug = debug or os.environ.get("BERT_DEBUG", "") not in ("", "0")
    try:
        return action() or 0
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bert download --list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except Exception as err:
        if debug:
            raise
        print(f"{command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
