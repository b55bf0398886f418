"""What every stage shares: logging, the CLI wrapper, input checks and all-or-nothing outputs."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

from bert.engine.allocator import active_allocator, reexec_with_allocator
from bert.io.fileio import atomic_path, atomic_write_text

logger = logging.getLogger("stages")


class MissingInputError(FileNotFoundError, ValueError):
    """A stage's input is not there; the message names the stage that produces it."""


def stage_parser(stage: str, doc: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m stages.<stage>``, with the shared --params option."""
    from stages.params import DEFAULT_PARAMS

    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="the params file (default params.yaml)")
    add_debug_flag(parser)
    return parser


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """--debug: a failed stage shows its traceback (as BERT_DEBUG=1 does, and the bert command)."""
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors (also BERT_DEBUG=1)")


def require_input(path: str | os.PathLike, producer: str, what: str = "input") -> Path:
    """Check that an input path exists.

    Args:
        path: the file or folder a stage reads.
        producer: the stage that writes it (e.g. "tokenize"), named in the error.
        what: a few words saying what the input is.
    Returns:
        the path.
    Raises:
        MissingInputError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{path}: missing {what}; it is produced by the {producer} stage (run `dvc repro {producer}` first)"
        )
    return path


@contextlib.contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Temporary paths for several outputs, renamed into place together only if the body succeeds.

    A failure (an exception, or a kill before the renames) leaves none of the outputs changed.
    """
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, producer: str) -> Any:
    """Read a JSON input, naming the stage that produces it when it is missing or broken."""
    path = require_input(path, producer)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); "
                         f"re-run the {producer} stage") from None


def setup_logging(rank: int = 0) -> None:
    """INFO logs on the main process, warnings only on the others."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_stage(name: str, body: Callable[[], None], debug: bool = False) -> int:
    """Run a stage's body as a CLI: 0 on success, 1 with a one-line error on bad input.

    Bad input (ValueError, which includes missing inputs, and file errors) is a clear message, not a
    traceback, unless `debug` or BERT_DEBUG=1 asks for it; anything else is a bug and propagates.
    """
    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        body()
    except (ValueError, OSError) as err:
        logger.error("stage %s failed: %s", name, err)
        if debug or os.environ.get("BERT_DEBUG", "") not in ("", "0"):
            raise
        return 1
    return 0


def run_training_program(main: Callable[[], int]) -> NoReturn:
    """A training stage run as a program: re-executed with tcmalloc first (BERT_ALLOCATOR), then main()."""
    try:
        reexec_with_allocator()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(main())


def environment() -> dict[str, Any]:
    """Versions and device, for the report."""
    import torch

    import bert

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()})"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bert_toolkit": bert.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "allocator": active_allocator(),
    }




def load_features(folder: str | os.PathLike, model_dir: str | os.PathLike):
    """Open a tokenize output split, checking it was made with the model folder's vocab.

    Returns:
        the bert.data.cache.CachedFeatures.
    """
    from bert.data.cache import CachedFeatures
    from bert.io.download import sha256_of

    features = CachedFeatures(require_input(folder, "tokenize", "tokenized features"))
    vocab = Path(model_dir) / "vocab.txt"
    if vocab.is_file() and sha256_of(vocab) != features.manifest.vocab_sha256:
        raise ValueError(f"{folder}: tokenized with another vocabulary than {vocab}; re-run the tokenize stage")
    return features
