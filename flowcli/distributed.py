"""Training one model on several processes with PyTorch's own engine (torch.distributed + DDP).

A ``DistContext`` is what the fit loop needs to know about the other processes: this process's rank,
the world size, its device, and the few collectives the loop uses (sums for metrics, an agreement on
whether to take a step, a lockstep over per-rank batch iterators). A single process gets the same
object with ``world == 1``, whose collectives are no-ops, so the loop has one code path.

Launch: ``torchrun --nproc-per-node N -m flowcli fit ...`` (any torchrun rendezvous, several nodes
included), or ``flowcli fit --nproc N ...`` which runs torch.distributed.run for one machine. Backend:
NCCL with one GPU per LOCAL_RANK when CUDA is used, gloo on CPU.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from .devices import resolve_device
from .errors import DataError, FlowcliError

if TYPE_CHECKING:
    from .model import Flow

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True inside a worker started by torchrun / torch.distributed.run (it sets these variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_secondary_rank() -> bool:
    """Ranks other than 0 stay quiet: rank 0 alone prints progress, messages and errors."""
    return launched_by_torchrun() and os.environ.get("RANK", "0") != "0"


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm(self, values: list[float], op: Any) -> list[float]:
        # NCCL only reduces CUDA tensors; gloo reduces CPU tensors.
        dev = self.device if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t, op=op)
        return t.cpu().tolist()

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of the total batch: the config's batch_size is the total over all ranks,
        so a run on N processes takes the same optimizer steps as one process (DDP averages gradients)."""
        if batch_size < self.world:
            raise DataError(
                f"training.batch_size {batch_size} is smaller than the {self.world} processes; "
                "it is the total over all processes"
            )
        return batch_size // self.world

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums over ranks (float64, so counts up to 2**53 stay exact)."""
        if not self.active:
            return list(values)
        return self._comm(list(values), torch.distributed.ReduceOp.SUM)

    def min(self, value: float) -> float:
        if not self.active:
            return value
        return self._comm([value], torch.distributed.ReduceOp.MIN)[0]

    def all_true(self, flag: bool | Tensor) -> bool:
        """True when ``flag`` holds on every rank: decisions that change control flow (skip a step,
        stop an epoch) must be the same everywhere, or DDP's gradient all-reduce would hang."""
        if isinstance(flag, Tensor):
            flag = bool(flag.item())
        return self.min(1.0 if flag else 0.0) > 0.5

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (e.g. a seed drawn once)."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def lockstep(self, batches: Iterator[T]) -> Iterator[T]:
        """Yield batches while *every* rank still has one. Ranks' shards differ by a few rows, and a
        rank that ran one more step than the others would wait forever in the gradient all-reduce."""
        for batch in batches:
            if not self.all_true(True):
                return
            yield batch
        self.all_true(False)  # tell the others this rank is done

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it raised a user error on any rank, raise one on every rank.

        Used around the data-loading phase, where each rank reads different rows and only one may hit
        a bad value: without this, the others would block in the next collective. Rank 0 reports the
        message (the first failing rank's), the other ranks fail quietly.
        """
        result: Any = None
        message: str | None = None
        try:
            result = fn()
        except FlowcliError as exc:
            message = str(exc)
            if not self.active:
                raise
        messages = [m for m in self.gather(message) if m is not None]
        if messages:
            raise DataError(messages[0])
        return result

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel when there are several ranks. DDP broadcasts rank 0's parameters and
        buffers when it is built, so data-dependent initialization (actnorm) must run *before* this."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (masks, permutations, standardization) never change: synchronized once when DDP is
        # built, not before every forward (the keyword was renamed in recent torch releases).
        import inspect

        params = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync: dict[str, Any] = (
            {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(module, device_ids=device_ids, **no_sync)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init(device_name: str | torch.device) -> DistContext:
    """The context of this process: a process group when started by torchrun with WORLD_SIZE > 1
    (NCCL on the GPU of LOCAL_RANK, or gloo on CPU), else a single-process context."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext(device=resolve_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DataError(
                f"LOCAL_RANK {local_rank}: this machine has only {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device, backend)


class LogProb(nn.Module):
    """``flow.log_prob`` as a module's ``forward``, the call DDP intercepts to synchronize gradients."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)


def launch(nproc: int, fit_args: list[str]) -> int:
    """``flowcli fit --nproc N``: run ``torch.distributed.run --standalone --nproc-per-node N -m flowcli
    fit <fit_args>`` in this process (it becomes the torchrun agent) and return the exit code.

    In-process rather than as a subprocess so that a failed worker does not end in the agent's
    multi-line failure report: rank 0 has already printed the one-line ``Error:``; we return its code.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun warns when it sets OMP_NUM_THREADS itself; share the cores between the workers instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "-m", "flowcli", "fit", *fit_args]
    )
    try:
        run(args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    except SignalException as exc:
        # Ctrl-C / SIGTERM reached the agent; the workers got it too (rank 0 says "interrupted").
        return 130 if exc.sigval == signal.SIGINT else 128 + int(exc.sigval)
    return 0
