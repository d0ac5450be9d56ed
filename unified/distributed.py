"""Distributed helpers: one process per rank under ``torchrun``, gloo on CPU and nccl on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """Turn ``cpu``, ``0``, ``0,1`` or ``""`` (auto) into this rank's device.

    Raises:
        ValueError: for a CUDA device on a machine without CUDA, or a malformed spec.
    """
    typed = str(spec).strip()
    spec = typed.lower()
    if spec in ("cpu", "") and (spec == "cpu" or not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec == "":
        return torch.device("cuda", local_rank)
    if spec.startswith("cuda"):
        spec = spec.partition(":")[2] or "0"
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids or not all(s.isdigit() for s in ids):
        raise ValueError(
            f"--device must be 'cpu', a GPU index such as '0', or a list such as '0,1'; got {spec!r}"
        )
    if not torch.cuda.is_available():
        raise ValueError(f"--device {typed} asks for CUDA, but torch sees no CUDA device; use --device cpu")
    return torch.device("cuda", int(ids[local_rank % len(ids)]))


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_spec, local_rank)
    info = DistInfo(rank=rank, local_rank=local_rank, world_size=world)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None:
            dist.init_process_group(backend=backend)
        else:
            # torchrun keeps one store for every attempt of a group: a rank of a restarted group could read
            # a dead peer's address from the previous attempt and fail ("connection refused"). Each attempt
            # gets its own key prefix.
            store, rank, world = next(dist.rendezvous("env://"))
            dist.init_process_group(
                backend=backend,
                store=dist.PrefixStore(f"attempt{attempt}/", store),
                rank=rank,
                world_size=world,
            )
    return info, device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor across ranks (identity when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(obj: object) -> object:
    """Send a picklable object from rank 0 to every rank."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
