"""torchrun for the training stages: the same arguments, with the stages' way of failing and stopping.

    python -m bert.engine.launch --nproc_per_node 2 -m stages.finetune --task mrpc ...   # = torchrun ...

What it adds to torchrun (which it runs in-process, options and PET_* variables alike):

- before any worker starts, the program's own check: a module run with ``-m`` that defines
  ``preflight(argv, nproc) -> int`` is asked first (the training stages check their params there: a
  global batch that does not divide, more processes than this machine has), and a non-zero answer is the
  exit status: one line, not N ranks' errors and a launcher traceback;
- the workers die with the launcher: it exports $BERT_LAUNCHER_PID, which bert.io.lifetime.die_with_parent
  (called by setup_distributed in every worker) checks;
- Ctrl-C, SIGTERM or SIGHUP: torchrun hands the signal to the workers (rank 0 says in one line what
  was saved and how to resume) and this exits with 128 + N, without torchrun's traceback;
- a worker that fails has said why in its own line: the launcher exits with its status and adds a line
  only for a worker that died without a word (killed by a signal).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Optional

from bert.io.lifetime import LAUNCHER_PID_ENV, Interrupted, stop_signals

# torchrun's own lines that repeat what the workers and this launcher say
_REPEATS = ("death signal, shutting down workers", "closing signal", "failed (exitcode")


class _DropRepeats(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(text in message for text in _REPEATS)


def _preflight(module: str, argv: list[str], nproc: int) -> int:
    """The program module's preflight(argv, nproc) status (0 when it has none)."""
    check = getattr(importlib.import_module(module), "preflight", None)
    return int(check(list(argv), nproc)) if callable(check) else 0


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point (torchrun's arguments); returns the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import determine_local_world_size, parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).addFilter(_DropRepeats())
    try:
        with stop_signals():  # until torchrun installs its own handlers, which hand signals to the workers
            if args.module:
                status = _preflight(args.training_script, args.training_script_args,
                                    determine_local_world_size(args.nproc_per_node))
                if status:
                    return status
            os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
            run(args)
    except SignalException as err:  # the workers have been stopped and have said what they saved
        return 128 + int(err.sigval)
    except Interrupted as err:
        return err.exit_status
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode < 0:  # killed: it could not say anything itself
            print(f"{args.training_script}: rank {rank} (pid {failure.pid}) was killed by "
                  f"{failure.signal_name()}", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode or 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
