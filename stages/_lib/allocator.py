"""A faster malloc for CPU training: the process re-executes itself with tcmalloc preloaded.

glibc's malloc copes badly with the ever-changing tensor sizes of dynamic padding: its heap fragments,
the process grows (3.6 GiB on MRPC), and every operator slows over the epochs. With tcmalloc the same
3-epoch MRPC fine-tuning ran at 51.6 s/epoch against 61.6 (2 cores, bf16), at 1.9 GiB, with the same
final loss to the last bit (bench/RESULTS.md). PyTorch's own CPU launcher
(``torch.backends.xeon.run_cpu``) preloads tcmalloc for the same reason.

A malloc can only be replaced before the process starts, so a training stage run as a program calls
``reexec_with_allocator()`` first: it re-executes the same interpreter with the same arguments and
environment plus ``LD_PRELOAD`` (``execve``: the same PID, so torchrun, DVC and Prefect see one
process). The choice is ``BERT_ALLOCATOR``:

    auto       tcmalloc when the system has it (Debian/Ubuntu: apt install libtcmalloc-minimal4), else
               the system's malloc (the default)
    tcmalloc   tcmalloc, or an error when it is not installed
    system     the system's malloc: no re-execution
    /path.so   this shared library
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Optional

logger = logging.getLogger(__name__)

ALLOCATOR_ENV = "BERT_ALLOCATOR"
CHOICES = ("auto", "tcmalloc", "system")
# Set in the re-executed process: never re-execute twice, even when the preload did not take.
REEXEC_GUARD_ENV = "BERT_ALLOCATOR_REEXECUTED"
TCMALLOC_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")  # the minimal build first: no heap profiler


def find_tcmalloc() -> Optional[str]:
    """tcmalloc's shared library name as the dynamic linker finds it, or None."""
    for name in TCMALLOC_LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def wanted_allocator(env: Mapping[str, str] = os.environ) -> Optional[str]:
    """The library that BERT_ALLOCATOR asks to preload (None: the system's malloc).

    Raises:
        ValueError: an unknown choice, tcmalloc asked for and not installed, or a path that is not a file.
    """
    choice = env.get(ALLOCATOR_ENV, "auto").strip() or "auto"
    if choice == "system":
        return None
    if choice in ("auto", "tcmalloc"):
        found = find_tcmalloc()
        if found is None and choice == "tcmalloc":
            raise ValueError(f"{ALLOCATOR_ENV}=tcmalloc, but no tcmalloc library is installed "
                             f"(Debian/Ubuntu: apt install libtcmalloc-minimal4); or set {ALLOCATOR_ENV}=system")
        return found
    if os.sep in choice:
        if not Path(choice).is_file():
            raise ValueError(f"{ALLOCATOR_ENV}={choice}: no such shared library file")
        return choice
    raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: expected one of {', '.join(CHOICES)} or a path to a shared library")


def mapped_libraries() -> list[str]:
    """The shared libraries mapped into this process (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return sorted({line.split(None, 5)[5] for line in maps.splitlines()
                   if len(line.split(None, 5)) == 6 and ".so" in line})


def is_loaded(library: str) -> bool:
    """Whether `library` (a soname such as libtcmalloc_minimal.so.4, or a path) is mapped into this process."""
    wanted = Path(library)
    real = wanted.resolve() if wanted.is_absolute() else None
    for mapped in map(Path, mapped_libraries()):
        # The soname is a link: libtcmalloc_minimal.so.4 maps as libtcmalloc_minimal.so.4.5.10.
        if mapped.name == wanted.name or mapped.name.startswith(wanted.name + "."):
            return True
        if real is not None and mapped.resolve() == real:
            return True
    return False


def active_allocator() -> str:
    """The malloc this process runs with: a preloaded tcmalloc/jemalloc library's name, or "system"."""
    for mapped in mapped_libraries():
        name = Path(mapped).name
        if name.startswith(("libtcmalloc", "libjemalloc", "libmimalloc")):
            return name
    requested = os.environ.get(ALLOCATOR_ENV, "")
    if os.sep in requested and is_loaded(requested):
        return Path(requested).name
    return "system"


def reexec_with_allocator(env: Optional[Mapping[str, str]] = None) -> None:
    """Re-execute this process with BERT_ALLOCATOR's library preloaded; return if there is nothing to do.

    Call it first thing in a program's ``__main__`` (never from a library call: it replaces the process).
    Returns without re-executing off Linux, when the system's malloc is asked for or no tcmalloc is found,
    when the library is loaded already, and in the re-executed process itself.

    Raises:
        ValueError: from wanted_allocator, for a BERT_ALLOCATOR it cannot honour.
    """
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux"):
        return
    library = wanted_allocator(env)
    if library is None or is_loaded(library):
        return
    if env.get(REEXEC_GUARD_ENV):
        logger.warning("%s was preloaded but is not mapped: running with the system's malloc", library)
        return
    preload = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env.update({"LD_PRELOAD": preload, REEXEC_GUARD_ENV: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
