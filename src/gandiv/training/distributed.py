"""Data-parallel training over processes started by `torchrun` (one per GPU, or per CPU slot).

Semantics are DistributedDataParallel's: every rank holds a full replica of the model, the
objective's critic and any joint parameters, draws its own batches and noise from its own seed
stream (`rank_seed`), and before every optimiser step the gradients of the parameters that
optimiser steps are averaged over the ranks, so the replicas stay identical; buffers
(BatchNorm's running statistics) are broadcast from rank 0 after every training step, as DDP
does before every forward. `trainer.batch_size` is per rank (the global batch is N times it).

The gradients are all-reduced explicitly (one flattened bucket per optimiser and dtype) rather
than through `torch.nn.parallel.DistributedDataParallel`: the objectives call the model through
`sample` (not `forward`, the only method DDP synchronises) and call the critic in the model step
with its gradients frozen, which DDP would wait for as unused parameters. Communication
therefore does not overlap the backward pass.

Only rank 0 writes the run directory (`ReplicatedRunDirectory`); a checkpoint holds every
rank's random state, so a resume with the same number of processes continues exactly. Rank 0
chooses the run directory and the others receive its name (`share_from_main`).
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gandiv.errors import UserError
from gandiv.training.run_dir import RunDirectory

# Offset between the seeds of consecutive ranks' training generators (rank 0 keeps trainer.seed,
# so a one-process run is rank 0 of any larger one).
RANK_SEED_OFFSET = 7_919_000_003
# What differs between the ranks in a checkpoint: their random streams and undrawn batches.
PER_RANK_KEYS = ("generator", "torch_rng", "splits")

_control: Any = None  # a gloo group for host-side agreement (names, flags, checkpoint states)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_ranks() -> Ranks:
    """The ranks torchrun's environment gives this process (RANK, WORLD_SIZE)."""
    return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def start() -> Ranks:
    """Join the process group torchrun set up (gloo for CPU tensors, NCCL for CUDA ones); each
    process uses the GPU of its LOCAL_RANK."""
    global _control
    ranks = launched_ranks()
    if ranks.world_size == 1 or dist.is_initialized():
        return current()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    _control = dist.new_group(backend="gloo")
    atexit.register(dist.destroy_process_group)
    # every rank has made its read-only checks before any rank creates a run directory
    dist.barrier(group=_control)
    return current()


def current() -> Ranks:
    """The ranks of the process group this process joined (0 of 1 if none)."""
    if not dist.is_initialized():
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size())


def share_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def agree_signal(signum: int | None) -> int | None:
    """The stop signal any rank caught (None: none did), the same on every rank, so that every
    rank checkpoints and stops at the same step (a gloo all-reduce of one integer per step)."""
    if not dist.is_initialized():
        return signum
    flag = torch.tensor([signum or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_control)
    return int(flag) or None


def rank_seed(seed: int, ranks: Ranks) -> int:
    """The seed of this rank's training generator (batches and model noise)."""
    return seed + RANK_SEED_OFFSET * ranks.rank


def _flattened(
    tensors: Iterable[torch.Tensor], collective: Callable[[torch.Tensor], object]
) -> None:
    """Run `collective` in place on `tensors`, one flattened bucket per device and dtype."""
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        buckets[(t.device, t.dtype)].append(t)
    for bucket in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(params: Iterable[nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over the ranks (parameters without one are skipped:
    the same ones on every rank, since every rank runs the same step)."""

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        flat.div_(world_size)

    _flattened((p.grad for p in params if p.grad is not None), mean)


def broadcast_state(modules: Iterable[nn.Module], parameters: bool) -> None:
    """Rank 0's buffers (and, with `parameters`, its parameters) on every rank."""
    tensors = []
    for module in modules:
        tensors += [b for b in module.buffers() if b.is_floating_point() or b.dtype == torch.long]
        if parameters:
            tensors += [p.data for p in module.parameters()]
    _flattened(tensors, lambda flat: dist.broadcast(flat, src=0))


def replicate(
    ranks: Ranks,
    modules: tuple[nn.Module, ...],
    optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer | None,
) -> None:
    """Make the ranks train one model: rank 0's initial state everywhere, gradients averaged
    before each optimiser step, buffers broadcast after each training step (the model's
    optimiser steps last)."""
    if ranks.world_size == 1:
        return
    broadcast_state(modules, parameters=True)

    def averaging(params: list[nn.Parameter]) -> Any:
        return lambda _opt, _args, _kwargs: average_gradients(params, ranks.world_size)

    for opt in (optimizer, critic_optimizer):
        if opt is not None:
            opt.register_step_pre_hook(
                averaging([p for g in opt.param_groups for p in g["params"]])
            )
    optimizer.register_step_post_hook(
        lambda _opt, _args, _kwargs: broadcast_state(modules, parameters=False)
    )


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of the tensors of a model's and an objective's state dicts (replicas must agree)."""
    digest = hashlib.sha256()
    for part in ("model", "objective"):
        for name, value in state[part].items():
            if isinstance(value, torch.Tensor):
                digest.update(name.encode())
                digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _on_cpu(value: Any) -> Any:
    """`value` with its tensors (at any depth of dicts) copied to the CPU, for pickling."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    return value


class ReplicatedRunDirectory(RunDirectory):
    """The run directory as every rank sees it: rank 0 writes, the others write nothing.

    A checkpoint is a collective: each rank contributes its random state (`PER_RANK_KEYS`) and a
    digest of its replica, rank 0 refuses to save replicas that differ (a bug) and stores the
    states under ``ranks``.
    """

    def __init__(self, path: Any, ranks: Ranks) -> None:
        super().__init__(path)
        self.ranks = ranks
        self.writes = ranks.main

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        mine = {k: _on_cpu(state[k]) for k in PER_RANK_KEYS} | {"digest": state_digest(state)}
        gathered: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(gathered, mine, group=_control)
        if not self.ranks.main:
            return
        digests = {entry["digest"] for entry in gathered}
        if len(digests) != 1:
            raise RuntimeError(f"the replicas differ at step {state['step']}: {sorted(digests)}")
        super().save_checkpoint({**state, "world_size": self.ranks.world_size, "ranks": gathered})

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.writes:
            super().append_metrics(record)

    def sync_metrics(self) -> int:
        return super().sync_metrics() if self.writes else 0

    def truncate_metrics(self, length: int) -> None:
        if self.writes:
            super().truncate_metrics(length)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.writes:
            super().write_summary({**summary, "world_size": self.ranks.world_size})

    def save_samples(self, samples: Any) -> None:
        if self.writes:
            super().save_samples(samples)

    def write_json(self, name: str, obj: Any) -> None:
        if self.writes:
            super().write_json(name, obj)

    def write_text(self, relative: str, text: str) -> None:
        if self.writes:
            super().write_text(relative, text)


def run_directory(path: Any, ranks: Ranks) -> RunDirectory:
    """The run directory of this process (a plain one without torchrun)."""
    return RunDirectory(path) if ranks.world_size == 1 else ReplicatedRunDirectory(path, ranks)


def rank_checkpoint(state: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    """A loaded checkpoint with this rank's own random state in place of rank 0's; a run resumes
    only with the number of processes it was trained with."""
    trained = int(state.get("world_size", 1))
    if trained != ranks.world_size:
        how = "one process" if trained == 1 else f"torchrun --nproc_per_node={trained}"
        raise UserError(
            "resume",
            f"the run was trained by {trained} process(es) and resumes exactly only with as many "
            f"({how}); this resume has {ranks.world_size}",
        )
    if trained == 1:
        return state
    return {**state, **{k: state["ranks"][ranks.rank][k] for k in PER_RANK_KEYS}}
