"""One run on many processes through torchrun (DDP): `torchrun --nproc-per-node N -m moelab train
CONFIG --out DIR`. moelab launches nothing itself; torchrun sets RANK, WORLD_SIZE and the
rendezvous, and this module joins it.

Every rank renders the whole global batch of each step from the same random stream and trains on
its own slice of the paragraphs (rows r, r + N, ...), so each exposure stays exact: every
paragraph of the single-process run is trained on once, by one rank. DDP averages the gradients
of the equal slices, which is the gradient of the global batch. The loss is averaged over ranks
before it is logged or checked, the routers' loads are summed before the auxiliary-loss-free bias
moves, and rank 0 alone writes the run folder and measures the model. `resolve_device` is the
one place a device name ("cpu", "cuda", "auto") becomes a torch device.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from moelab.errors import MoelabError


def launched() -> bool:
    """True in a process that torchrun (or another launcher setting WORLD_SIZE > 1) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> None:
    """Join torchrun's process group: NCCL for CUDA, gloo for CPU (each rank on its local GPU)."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (the value itself in one process)."""
    size = world()[1]
    if size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / size


def sum_over_ranks_(tensor: torch.Tensor) -> None:
    if world()[1] > 1:
        dist.all_reduce(tensor)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (so that all ranks checkpoint or stop together)."""
    if world()[1] == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """'cpu', 'cuda' or 'auto' (CUDA where there is one) as a torch device; `option` names the
    setting in the error when CUDA is asked of a torch without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MoelabError(f"{option} = {name!r} but this torch ({torch.__version__}) sees no CUDA device; "
                          "use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise MoelabError(f"{option} = {name!r}: not a device; use 'cpu', 'cuda' or 'auto'") from None
