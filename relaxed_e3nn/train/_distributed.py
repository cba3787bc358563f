"""Data parallelism over ``torch.distributed``: process-group setup and the reductions the loop needs.

The trainer does not wrap the model in ``DistributedDataParallel``: every rank holds the whole
dataset, takes a fixed share ``batch[rank::world]`` of each global batch, normalises its loss
by the *global* batch's component counts and sums gradients over ranks with one
``all_reduce``. The summed gradient is then exactly the gradient of the single-process loss
of the same global batch (up to floating-point summation order), the optimizer steps are
identical on every rank, and double backward (forces) needs no DDP hooks.
"""
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch

__all__ = ["DistributedContext", "setup_distributed"]


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (no-op in a single process)."""
        if self.enabled:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def sum_gradients_(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum ``.grad`` over ranks in one flat buffer (missing gradients count as zero)."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # a parameter that no rank used keeps grad None, as it would in a single process
        # (optimizers skip it instead of stepping on a zero gradient)
        used = torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype,
                            device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [used])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        used = flat[-len(params):]
        offset = 0
        for k, (p, g) in enumerate(zip(params, grads)):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone() if bool(used[k] > 0) else None
            offset += n

    def broadcast_parameters_(self, module: torch.nn.Module) -> None:
        """Make every rank start from rank 0's weights."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                torch.distributed.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.device.index])
            else:
                torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("config: device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.startswith("cuda:") and not torch.cuda.is_available():
        raise ValueError(f"config: device is {device!r} but no CUDA device is available")
    return torch.device(device)


def setup_distributed(device: str = "auto", env: Optional[Dict[str, str]] = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``);
    uses NCCL with one GPU per local rank on CUDA, gloo on CPU. Without ``WORLD_SIZE > 1``
    this is a single process.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(0, 1, _resolve_device(device, 0), False)
    rank = int(env["RANK"])
    local_rank = int(env.get("LOCAL_RANK", rank))
    dev = _resolve_device(device, local_rank)
    owns = False
    if not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistributedContext(rank, world, dev, owns)
