"""torchrun integration: the process group, and the gather that lets every anchor see every process's
candidates.

``torchrun --nproc_per_node N train/train.py ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; without them the
run is a single process and nothing here communicates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from simcse.device import resolve_device


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto") -> tuple[ProcessInfo, torch.device]:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessInfo(), resolve_device(device_name)
    info = ProcessInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _GatherRows(torch.autograd.Function):
    """All processes' rows in rank order; the backward pass returns to each process the gradient of
    every process's loss with respect to its own rows (all-reduced, then sliced).

    Written out because ``torch.distributed.nn.functional.all_gather`` is deprecated and its suggested
    replacement is private.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.local = dist.get_rank(), rows.shape[0]
        gathered = rows.new_empty((dist.get_world_size() * rows.shape[0], *rows.shape[1:]))  # (W*B, ...)
        dist.all_gather_single(gathered, rows.contiguous())
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # (W*B, ...)
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.local : (ctx.rank + 1) * ctx.local]  # (B, ...)


def gather(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The loss's gather hook: every process's rows (W*B, ...) and the index of this process's first row.

    Floating-point rows keep their gradient; integer rows (token ids) are gathered as they are. Every
    process must hold the same number of rows of the same shape.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return rows, 0
    first_row = dist.get_rank() * rows.shape[0]
    if rows.is_floating_point():
        return _GatherRows.apply(rows), first_row
    gathered = rows.new_empty((dist.get_world_size() * rows.shape[0], *rows.shape[1:]))
    dist.all_gather_single(gathered, rows.contiguous())
    return gathered, first_row


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every process."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def all_objects(obj) -> list:
    """``obj`` of every process, in rank order."""
    if not dist.is_initialized():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap_for_processes(model: torch.nn.Module, process: ProcessInfo, device: torch.device) -> torch.nn.Module:
    """The module the loop calls: DDP under torchrun (it averages the gradients; every parameter gets one, the
    frozen pooler has none to average), else the model itself."""
    if not process.is_distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
