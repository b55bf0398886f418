"""Shared helpers of the benchmarks: interleaved timing, machine description, peak RSS, JSON output.

Timings on a shared machine are noisy, so every comparison runs its contenders in turn (A B A B ...,
the order rotating each round) and reports medians: load that comes and goes hits both sides alike,
and the ratio stays meaningful even when the absolute figures drift.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Timing:
    """Seconds per call of one contender: the median and spread of the measured rounds."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    rounds: int

    def to_dict(self) -> dict:
        return asdict(self)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time several callables in interleaved rounds.

    Args:
        contenders: name -> a callable doing one unit of work (it must finish its work before returning).
        rounds: measured calls of each contender.
        warmup: unmeasured calls of each contender first (allocator, oneDNN primitive caches).
        clock: wall time by default; time.process_time (CPU seconds of this process) measures work
            rather than waiting on a loaded machine (with one thread, where no thread spins idle).
    Returns:
        name -> Timing (median, min, max seconds per call).
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            start = clock()
            contenders[name]()
            samples[name].append(clock() - start)
    return {n: Timing(n, statistics.median(s), min(s), max(s), len(s)) for n, s in samples.items()}


def add_timing_args(parser) -> None:
    """--threads and --cpu-time, shared by the benchmarks."""
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, timed in CPU seconds of this process: the work done, robust to "
                             "other processes' load (wall time is the default)")


def timing_setup(args) -> Callable[[], float]:
    """Apply --threads / --cpu-time; return the clock to time with."""
    import torch

    if args.cpu_time:
        torch.set_num_threads(1)
        return time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    return time.perf_counter


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The vector-instruction flags that decide matmul speed (AVX-512, bf16, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx")))
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """CPU model, core count, threads used, load average, library versions: what a figure depends on."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or of its finished children)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def write_json(path: Path, payload: dict) -> None:
    """Write JSON to a temporary name and rename it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of rows (dicts) over the given columns; floats with 3 significant digits."""

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
