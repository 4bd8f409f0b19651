"""Training on several processes with PyTorch DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node N -m napari_deparray_ctc train DATA --out M.pt`` starts N copies
of the command; :func:`from_environment` sees torchrun's variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group (NCCL on GPUs,
gloo on CPUs). Without them, training runs in one process as always. Inside ``core.fit``:

* every rank builds the same split and the same folds (same seed, same data), and the same
  global order of samples each epoch; each global batch of ``batch_size`` samples is divided
  among the ranks **by class** (:meth:`DistContext.share`), so each rank gets the same share of
  CTCs; DistributedDataParallel averages the gradients, so one step uses the same samples as
  a one-process step with the same batch size;
* held-out cells are scored in shares too and gathered (:meth:`DistContext.gather_logits`), so
  every rank judges every epoch on all of them, with rank 0's BatchNorm statistics
  (:meth:`DistContext.sync_buffers`): all ranks keep the same epoch and stop together;
* ``should_stop`` is combined across ranks every batch (:meth:`DistContext.any`): a stop on one
  rank stops all of them at the same batch;
* only rank 0 reports progress and writes the model file (atomically);
* a rank that fails makes torchrun end the others (its default); collectives time out after
  :data:`TIMEOUT_MIN` minutes otherwise.

See ``docs/scaling.md`` for cluster use (``--nnodes``, rendezvous).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TIMEOUT_MIN", "DistContext", "from_environment"]

#: Minutes a collective waits for a missing rank before failing.
TIMEOUT_MIN = 10


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class DistContext:
    """This process's place in a distributed run (``active`` False: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    active: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: reports progress and writes files."""
        return self.rank == 0

    def wrap(self, network):
        """The network for training steps: DistributedDataParallel when active."""
        if not self.active:
            return network
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(network, device_ids=ids)

    def share(self, batch, labels) -> Any:
        """This rank's samples of a global batch: the batch sorted by class, every world-th.

        ``batch`` is a 1-D long tensor of sample indices, ``labels`` the 0/1 labels of all
        samples. Sorting by class first gives every rank the same number of CTCs (± 1).
        """
        if not self.active:
            return batch
        import torch

        order = torch.argsort(labels[batch], stable=True)
        return batch[order][self.rank :: self.world]

    def any(self, flag: bool) -> bool:
        """``True`` on every rank when ``flag`` is ``True`` on any rank."""
        if not self.active:
            return bool(flag)
        import torch
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sync_buffers(self, network) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
        if not self.active:
            return
        import torch.distributed as dist

        for buffer in network.buffers():
            dist.broadcast(buffer.data, src=0)

    def gather_logits(self, predict, images) -> np.ndarray:
        """Logits of all ``images``: each rank scores every world-th, then all are gathered.

        ``predict(images_subset) -> numpy array`` is the one-process scorer.
        """
        if not self.active:
            return predict(images)
        import torch.distributed as dist

        n = int(images.shape[0])
        mine = np.arange(self.rank, n, self.world)
        part = predict(images[mine]) if len(mine) else np.zeros(0)
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (mine.tolist(), part.tolist()))
        out = np.zeros(n, dtype=np.float64)
        for index, values in parts:
            out[np.asarray(index, dtype=int)] = values
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def _comm_device(self) -> str:
        return self.device if self.device.startswith("cuda") else "cpu"


def from_environment(preferred_device: str) -> DistContext:
    """Join torchrun's process group when this process is one of its workers.

    Parameters
    ----------
    preferred_device
        The device training would use alone (``"cuda"``, ``"cpu"``...). Under torchrun a
        CUDA device becomes ``cuda:<LOCAL_RANK>``.

    Returns
    -------
    DistContext
        ``active`` when ``WORLD_SIZE`` > 1; the process group is initialised once.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=preferred_device)
    import torch
    import torch.distributed as dist

    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    cuda = preferred_device.startswith("cuda") and torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(minutes=TIMEOUT_MIN),
        )
    return DistContext(rank=rank, world=world, local_rank=local_rank, device=device, active=True)
