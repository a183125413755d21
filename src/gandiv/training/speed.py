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
    """Compile the networks of `owners` in place and return their names: each `nn.Sequential`
    and each layer with parameters outside one, found by descending through the other modules.
    Those are what the models and objectives call as modules; the modules around them are
    reached through other methods (`sample`, `inverse`, `critic_loss`), which compiling a
    module's `forward` would miss."""
    compiled = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}"
            leaf = next(child.children(), None) is None
            if isinstance(child, nn.Sequential) or (leaf and any(True for _ in child.parameters())):
                child.compile()
                compiled.append(path)
            else:
                visit(path, child)

    for owner in owners:
        visit(type(owner).__name__, owner)
    return compiled
