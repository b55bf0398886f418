"""What every stage shares: logging, the CLI wrapper, input checks and all-or-nothing outputs.

Light on purpose (no torch at import): download, convert, report and builtin_corpus use it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

from bert.io.download import sha256_of
from bert.io import jsonfile
from bert.io.fileio import atomic_path, atomic_write_text
from bert.io.lifetime import stop_signals
from stages._lib.params import DEFAULT_PARAMS

logger = logging.getLogger("stages")
T = TypeVar("T")


class MissingInputError(FileNotFoundError, ValueError):
    """A stage's input is not there; the message names the stage that produces it."""


def stage_parser(stage: str, doc: str, default_params: Path = DEFAULT_PARAMS) -> argparse.ArgumentParser:
    """The argument parser of ``python -m stages.<stage>``, with the shared --params and --debug options.

    --debug: a failed stage shows its traceback (as BERT_DEBUG=1 does, and the bert command).
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc.splitlines()[0])
    parser.add_argument("--params", type=Path, default=default_params,
                        help=f"the params file (default {default_params})")
    parser.add_argument("--debug", action="store_true", help="show the traceback on errors (also BERT_DEBUG=1)")
    return parser


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

    A failure (an exception, or a kill before the renames) leaves none of the outputs changed. An output
    folder replaces an existing folder only if it holds every name that one holds (a previous output of the
    same stage does): ``--out .`` or a typo naming a folder of results is refused, nothing changed.
    """
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(atomic_path(p)) for p in paths]
        yield temporaries
        for path, tmp in zip(paths, temporaries):
            if tmp.is_dir():
                check_replaceable(Path(path), os.listdir(tmp))


def check_replaceable(path: Path, names: Iterable[str]) -> None:
    """Refuse to replace an existing folder at output `path` by one holding only `names`.

    Raises:
        ValueError: the folder holds entries the new output would not bring back (they would be lost).
    """
    if not path.is_dir() or path.is_symlink():
        return
    lost = sorted(set(os.listdir(path)) - set(names))
    if lost:
        raise ValueError(f"{path}: the output folder exists and holds {len(lost)} entries this output would not "
                         f"bring back ({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}): move it away or "
                         "choose another output; nothing was changed")


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, producer: str, expect: Any = None) -> Any:
    """Read a JSON input (bert.io.jsonfile.read_json), naming the stage that produces it when it is missing or
    broken.

    Args:
        path: the file.
        producer: the stage that writes it, named in the error.
        expect: the type its top-level value must have (e.g. dict), or None.
    """
    path = require_input(path, producer)
    try:
        return jsonfile.read_json(path, expect)
    except ValueError as err:
        raise ValueError(f"{err}; re-run the {producer} stage") from None


def setup_logging(rank: int = 0) -> None:
    """INFO logs on the main process, warnings only on the others."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_stage(name: str, body: Callable[[], None], debug: bool = False,
              saved: Optional[Callable[[], str]] = None) -> int:
    """Run a stage's body as a CLI: 0 on success, 1 with a one-line error on bad input, 128 + N on signal N.

    Bad input (ValueError, which includes missing inputs, and file errors) is a clear message, not a
    traceback, unless `debug` or BERT_DEBUG=1 asks for it; anything else is a bug and propagates.
    Ctrl-C, SIGTERM and SIGHUP stop the body (bert.io.lifetime.stop_signals) and rank 0 says in one line
    what was saved and how to go on: `saved()` tells (a training stage: its checkpoint); by default
    nothing was, since outputs appear only complete. The exit status is 130 for Ctrl-C (143 SIGTERM).
    """
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(rank)
    debugging = debug or os.environ.get("BERT_DEBUG", "") not in ("", "0")
    try:
        with stop_signals():
            body()
    except (ValueError, OSError) as err:
        logger.error("stage %s failed: %s", name, err)
        if debugging:
            raise
        return 1
    except KeyboardInterrupt as err:  # bert.io.lifetime.Interrupted, or a Ctrl-C before its handler
        signum = getattr(err, "signum", signal.SIGINT)
        if rank == 0:
            note = saved() if saved is not None else NOTHING_SAVED
            logger.error("stage %s interrupted by %s: %s", name, signal.Signals(signum).name, note)
        if debugging:
            raise
        return 128 + signum
    return 0


NOTHING_SAVED = "nothing was written (outputs appear only when complete); run the same command again"


def load_features(folder: str | os.PathLike, model_dir: str | os.PathLike, task: str | None = None):
    """Open a tokenize output split (checked whole: bert.data.cache), checking it was made for `task` (when
    given) with the model folder's vocab.

    Returns:
        the bert.data.cache.CachedFeatures.
    Raises:
        ValueError: features of another task or vocabulary, or a damaged cache (naming the file).
    """
    from bert.data.cache import MANIFEST, CachedFeatures

    features = CachedFeatures(require_input(folder, "tokenize", "tokenized features"))
    if task is not None and features.manifest.task != task:
        raise ValueError(f"{Path(folder) / MANIFEST}: features of task {features.manifest.task!r}, not {task!r}; "
                         f"run the tokenize stage for {task}")
    return check_vocab(features, folder, model_dir, "tokenize")


def check_vocab(data: T, folder: str | os.PathLike, model_dir: str | os.PathLike, producer: str) -> T:
    """`data` (a cache with a manifest: features, pre-training instances) once checked it was made with the
    model folder's vocab.txt.

    Raises:
        ValueError: another vocabulary, naming the folder and the stage to re-run.
    """
    vocab = Path(model_dir) / "vocab.txt"
    if not vocab.is_file():
        raise ValueError(f"{vocab}: missing, so the features in {folder} cannot be checked against the model's "
                         "vocabulary; put the vocab.txt the model was trained with in its folder")
    if sha256_of(vocab) != data.manifest.vocab_sha256:
        raise ValueError(f"{folder}: tokenized with another vocabulary than {vocab}; re-run the {producer} stage")
    return data
