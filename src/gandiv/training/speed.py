"""How a training step runs fast: mixed precision, compiled networks, cuDNN autotuning.

`trainer.precision` picks the dtype of autocast around the step's network computations (the
objective's losses; backward and the optimiser steps stay outside it, on float32 weights). bf16
has float32's exponent range, so no loss scaling is needed. `trainer.compile` compiles the
networks in place (`nn.Module.compile`), which keeps their `state_dict` keys the plain ones, so
checkpoints of compiled and uncompiled runs are interchangeable.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from gandiv.errors import UserError

PRECISIONS = {"bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 on CUDA (fp32 on GPUs without bf16) and fp32 on the CPU (where bf16
    matrix units are rare)."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if name == "auto":
        return "bf16" if bf16_gpu else "fp32"
    if name == "bf16" and device.type == "cuda" and not bf16_gpu:
        raise UserError(
            "trainer.precision", "bf16 needs a GPU with bfloat16 support; use fp32 or auto"
        )
    return name


@dataclass(frozen=True)
class StepPrecision:
    """The autocast of one training step on `device` (float32: none)."""

    name: str  # bf16 | fp32
    device: torch.device

    def autocast(self) -> AbstractContextManager[object]:
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.name])


def tune_device(device: torch.device) -> None:
    """Let cuDNN pick the fastest convolution algorithms for the step's fixed shapes (it times
    them on the first steps); nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def compile_networks(*owners: nn.Module) -> list[str]:
    """Compile every network (child module with parameters) of `owners` in place; return their
    names. The owners themselves are not compiled: their methods (`sample`, `critic_loss`) are
    not `forward`, while the networks are called as modules."""
    compiled = []
    for owner in owners:
        for name, child in owner.named_children():
            if any(True for _ in child.parameters()):
                child.compile()
                compiled.append(f"{type(owner).__name__}.{name}")
    return compiled
