"""K networks of one shape evaluated as one: parameters with a leading model axis.

A vectorised group (`gandiv.training.vectorized`) trains K runs that differ only in seeds and
scalar hyper-parameters. Their networks — the K generators, the K critics — are stacked: each
parameter becomes one tensor of shape (K, *shape), and every linear layer one batched matrix
product over inputs of shape (K, n, features). Each run keeps its own modules, whose parameters
and gradients are views into the stacked tensors: its optimiser steps its own slice in place, its
evaluation, figures and checkpoints read its own slice, and nothing is copied per step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gandiv.models.gaussian import GaussianModel
from gandiv.models.linear import LinearGenerator
from gandiv.models.mlp import ACTIVATIONS, MLPCritic, MLPGenerator


class StackedLinear(nn.Module):
    """K linear maps y_k = x_k W_kᵀ + b_k at once: x of shape (K, n, in) → (K, n, out)."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.weight = weight  # (K, out, in)
        self.bias = bias  # (K, out) or None

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight.mT)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)


# Modules whose parameters a stack can hold: their forward maps a leading model axis through
# (linear layers become StackedLinear; the linear and Gaussian models broadcast over it by
# themselves), and parameter-free modules that act element-wise.
_BROADCASTING: tuple[type[nn.Module], ...] = (LinearGenerator, GaussianModel)
_WITH_PARAMETERS: tuple[type[nn.Module], ...] = (nn.Linear, *_BROADCASTING)
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    *ACTIVATIONS.values(),
    nn.Sequential,
    MLPGenerator,
    MLPCritic,
)


def unstackable(module: nn.Module) -> str | None:
    """Why `module` cannot be stacked (None: it can): buffers, parametrisations (spectral norm)
    and layers other than linear maps and element-wise activations are not supported."""
    if any(True for _ in module.buffers()):
        return f"{type(module).__name__} has buffers"
    for name, sub in module.named_modules():
        if not isinstance(sub, _ELEMENTWISE + _WITH_PARAMETERS):
            return f"{type(module).__name__} contains a {type(sub).__name__} ({name or 'itself'})"
        own = [p for p, _ in sub.named_parameters(recurse=False)]
        if own and not isinstance(sub, _WITH_PARAMETERS):
            return f"{type(sub).__name__} holds parameters {own} of its own"
    return None


class StackedNetwork:
    """The networks `members` (same class, same shapes) as one module with stacked parameters.

    `module` is a copy of the first member whose parameters are the stacked (K, *shape) tensors
    and whose linear layers are StackedLinear: it maps (K, n, ...) inputs to (K, n, ...) outputs
    with each member's own parameters. After construction every member's parameters (and their
    gradients) are views into the stacked ones: `module`'s backward fills each member's `.grad`,
    and a member's optimiser stepping its parameters in place updates the stack.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        if not members:
            raise ValueError("a stack needs at least one network")
        template = members[0]
        reason = unstackable(template)
        if reason is not None:
            raise ValueError(f"cannot stack: {reason}")
        names = [name for name, _ in template.named_parameters()]
        for m in members[1:]:
            if type(m) is not type(template) or [(n, p.shape) for n, p in m.named_parameters()] != [
                (n, p.shape) for n, p in template.named_parameters()
            ]:
                raise ValueError("cannot stack networks of different classes or shapes")
        self.size = len(members)
        stacked = {
            name: nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in members]))
            for name in names
        }
        module = copy.deepcopy(template)
        for path, sub in list(module.named_modules()):
            prefix = f"{path}." if path else ""
            if isinstance(sub, nn.Linear):
                weight = stacked[f"{prefix}weight"]
                bias = stacked.get(f"{prefix}bias")
                parent, _, child = path.rpartition(".")
                setattr(module.get_submodule(parent), child, StackedLinear(weight, bias))
            elif isinstance(sub, _BROADCASTING):
                for pname, _ in list(sub.named_parameters(recurse=False)):
                    setattr(sub, pname, stacked[f"{prefix}{pname}"])
        self.module = module
        self.parameters = list(stacked.values())
        self.member_parameters = [[m.get_parameter(name) for name in names] for m in members]
        # Gradients live in the stack; each member's .grad is a view of its slice. Backward adds
        # into existing gradients in place, so the views stay valid: zero them, never drop them.
        for name, s in stacked.items():
            s.grad = torch.zeros_like(s)
            for k, m in enumerate(members):
                p = m.get_parameter(name)
                p.data = s.data[k]
                p.grad = s.grad[k]

    def zero_grad(self) -> None:
        for s in self.parameters:
            assert s.grad is not None
            s.grad.zero_()

    def requires_grad_(self, flag: bool) -> None:
        for s in self.parameters:
            s.requires_grad_(flag)


class StackedOptimizer:
    """Steps the members of a `StackedNetwork`, each with its own optimiser.

    When every member's optimiser is Adam with one parameter group and the same settings (the
    learning rates, betas, … of the runs agree), one Adam steps the stacked parameters instead:
    one fused update for all runs in place of one per run. Adam's update is element-wise, so each
    run's slice gets exactly the update its own optimiser would give it. Each member optimiser's
    state (moments, step count) is then a view into the stacked one, so the members' state dicts
    (what checkpoints save) stay current, and a member state loaded from a checkpoint seeds the
    stacked state. Otherwise each member's optimiser steps its own slice, one after another.
    """

    def __init__(self, stack: StackedNetwork, members: Sequence[torch.optim.Optimizer]) -> None:
        self.members = list(members)
        self.stacked: torch.optim.Optimizer | None = None
        groups = [m.param_groups for m in members]
        # (a rate schedule's `initial_lr` is the loop's, not Adam's)
        settings = [
            {k: v for k, v in g[0].items() if k not in ("params", "initial_lr")} for g in groups
        ]
        if not all(
            type(m) is torch.optim.Adam and len(g) == 1 and s == settings[0] and not s["amsgrad"]
            for m, g, s in zip(members, groups, settings, strict=True)
        ):
            return
        params = [g[0]["params"] for g in groups]
        if any(
            len(p) != len(own) or any(a is not b for a, b in zip(p, own, strict=False))
            for p, own in zip(params, stack.member_parameters, strict=True)
        ):
            return
        self.stacked = torch.optim.Adam(stack.parameters, **settings[0])
        for j, s in enumerate(stack.parameters):
            loaded = [m.state.get(p[j]) for m, p in zip(members, params, strict=True)]
            if all(state for state in loaded):  # resumed: every member brings its moments
                steps = {float(state["step"]) for state in loaded if state is not None}
                if len(steps) != 1:
                    raise ValueError("the runs of a stack must have taken the same optimiser steps")
                step = loaded[0]["step"].clone()  # type: ignore[index]
                moments = {
                    key: torch.stack([state[key] for state in loaded])  # type: ignore[index]
                    for key in ("exp_avg", "exp_avg_sq")
                }
            else:
                # (on the parameters' device for fused or capturable Adam, else on the host,
                # as Adam itself keeps it: a device step count would cost a sync per update)
                on_device = settings[0]["fused"] or settings[0]["capturable"]
                step = torch.zeros((), dtype=torch.float32, device=s.device if on_device else "cpu")
                moments = {key: torch.zeros_like(s) for key in ("exp_avg", "exp_avg_sq")}
            self.stacked.state[s] = {"step": step, **moments}
            for k, (m, p) in enumerate(zip(members, params, strict=True)):
                m.state[p[j]] = {"step": step, **{key: t[k] for key, t in moments.items()}}

    def step(self) -> None:
        if self.stacked is not None:
            # (the members' rates agree; a schedule moves them between steps)
            self.stacked.param_groups[0]["lr"] = self.members[0].param_groups[0]["lr"]
            self.stacked.step()
            return
        for member in self.members:
            member.step()
