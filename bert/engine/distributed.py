"""Process-group set-up for torchrun and the old ``python -m torch.distributed.launch``.

One process needs no process group: every collective below is then a no-op. Several processes use
gloo on CPU and NCCL on GPU. ``torchrun`` exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; the old launcher exports the same but passes the local rank as ``--local-rank=N``
(``--local_rank`` before torch 2.0) on the command line unless ``--use-env`` was given.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from bert.io.lifetime import die_with_parent

logger = logging.getLogger(__name__)

_LOCAL_RANK_FLAGS = ("--local-rank", "--local_rank")


def strip_launcher_args(argv: Sequence[str]) -> tuple[list[str], Optional[int]]:
    """Remove the old launcher's ``--local-rank N`` / ``--local_rank=N`` from a command line.

    Args:
        argv: command-line arguments (without the program name).
    Returns:
        (the remaining arguments, the local rank given there or None).
    """
    rest: list[str] = []
    local_rank: Optional[int] = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        if flag in _LOCAL_RANK_FLAGS:
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{flag} needs a value (the process's local rank)")
                value = args[i + 1]
                i += 1
            try:
                local_rank = int(value)
            except ValueError:
                raise ValueError(f"{flag} must be an integer, got {value!r}") from None
        else:
            rest.append(arg)
        i += 1
    return rest, local_rank


@dataclass
class DistContext:
    """Where this process sits in the job: its rank, the world size and its device.

    Without a process group (backend None: one process) barrier and the collectives do nothing.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group exists (several processes, or one that asked for a backend)."""
        return self.backend is not None

    def barrier(self) -> None:
        """Wait until every rank arrives (no-op for one process)."""
        if self.distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks in place and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of `tensor` over ranks, in place."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (all the same shape), in rank order."""
        if not self.distributed:
            return [tensor]
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return out


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_distributed(local_rank: Optional[int] = None, backend: Optional[str] = None,
                      device: Optional[str] = None, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group that torchrun (or the old launcher) describes, if any.

    Args:
        local_rank: the old launcher's ``--local-rank`` value (see strip_launcher_args); the
            LOCAL_RANK environment variable is used when it is None.
        backend: "gloo" or "nccl"; by default nccl when CUDA is available, else gloo. Naming one
            forms a process group even for a single process (e.g. to measure DDP on one GPU).
        device: "cpu" or "cuda" to force a device type; by default cuda when available.
        timeout_minutes: how long collectives wait for a missing rank before failing.
    Returns:
        The DistContext of this process. Calling it again returns the same group's context.

    A worker of torchrun (or bert.engine.launch) is made to die with its launcher first: torchrun starts
    workers in sessions of their own, out of reach of a kill of the launcher's process group.
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        die_with_parent()
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    if local_rank is None:
        local_rank = _env_int("LOCAL_RANK")
    if local_rank is None:
        local_rank = rank if world_size > 1 else 0
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world_size == 1 and backend is None:
        return DistContext(0, 1, local_rank, dev, None)
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if world_size == 1:  # a group of one: no launcher needed
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE={world_size} but {name} is not set: launch with torchrun")
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
        logger.info("joined process group: rank %d of %d (%s, %s)", rank, world_size, backend, dev)
    else:
        backend = dist.get_backend()
    return DistContext(rank, world_size, local_rank, dev, backend)


def cleanup_distributed() -> None:
    """Leave the process group (call once at the end of a distributed program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
