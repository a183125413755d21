"""Vectorised groups: K runs that differ only in seeds and scalar hyper-parameters, trained as one.

The runs of a group share their shapes — the same generator and critic architectures, dataset
dimension, batch size, steps and cadences — and may differ in their seeds (initialisation, data,
noise), learning rates and Adam betas, the divergence row and model step of the adversarial game
(gan, ns_gan, logit_gan, any f-GAN row, JS_π with any π), and the kernel and σ (annealed or not) of
instance noise. Each step:

* every run draws its batch, latents and instance noise from its own generator, in the order it
  draws them alone, so each run sees exactly the numbers it would see alone;
* the K generators and the K critics run as one stacked network each (`StackedNetwork`): one
  batched matrix product per layer for all runs, the per-run losses computed from each run's rows
  of the outputs by the run's own objective (runs with the same loss share one call);
* each run's optimiser steps its own slice of the stacked parameters.

So every run ends with the numbers it gets alone, to the rounding of a batched against an
unbatched matrix product, and writes the same files (`train_runs` does the per-run bookkeeping).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from gandiv.models.base import GenerativeModel
from gandiv.objectives.adversarial import VariationalDivergence
from gandiv.objectives.base import Objective
from gandiv.training.loop import RunTask, add_critic_metrics
from gandiv.training.stacked import StackedNetwork, StackedOptimizer, unstackable


def unvectorizable(model: GenerativeModel, objective: Objective) -> str | None:
    """Why a run cannot join a vectorised group (None: it can)."""
    if not isinstance(objective, VariationalDivergence):
        return f"objective={objective.name} is not an adversarial objective"
    if objective.gradient_penalty > 0:
        return "objective.gradient_penalty > 0"
    if objective.packing > 1:
        return "objective.packing > 1"
    if objective.critic_average is not None:
        return "objective.critic_ema > 0"
    if not model.separates_noise:
        return f"the model ({type(model).__name__}) does not draw its noise apart"
    return unstackable(model) or unstackable(objective.critic)


# On the CPU, `max_group=auto` keeps a layer's outputs for a whole group within this many bytes:
# beyond a core's L2 cache (2 MiB here, shared by the inputs, outputs and gradients of a layer)
# the batched step streams its activations from memory and stops gaining (benchmarks/README.md).
CPU_GROUP_BYTES = 512 * 1024


def cache_group_size(
    model: GenerativeModel, objective: Objective, batch_size: int, device: torch.device
) -> int:
    """The most runs of this shape `max_group=auto` puts in one group (0: no limit, on a GPU)."""
    if device.type != "cpu":
        return 0
    assert isinstance(objective, VariationalDivergence)
    widths = [
        layer.out_features
        for net in (model, objective.critic)
        for layer in net.modules()
        if isinstance(layer, nn.Linear)
    ]
    copies = objective.spread_samples if objective.spread is not None else 1
    size = next(model.parameters()).element_size()
    layer_bytes = 2 * batch_size * copies * max(widths, default=model.dim) * size  # real + fake
    return max(1, CPU_GROUP_BYTES // layer_bytes)


def noise_shape(objective: Objective) -> tuple[bool, int]:
    """What the runs of a group must share about instance noise (its kernel and σ may differ):
    whether the critic sees noisy points, and how many noisy copies of each."""
    if not isinstance(objective, VariationalDivergence) or objective.spread is None:
        return False, 1
    return True, objective.spread_samples


def loss_order(objective: Objective) -> str:
    """Sort key of a group's runs that puts runs computing the same losses side by side."""
    if not isinstance(objective, VariationalDivergence):
        return objective.name
    return repr(objective.loss_key)


class VectorizedStep:
    """One training step of every run of a group (a `StepFunction` for `train_runs`)."""

    def __init__(
        self,
        tasks: Sequence[RunTask],
        critic_steps: int,
        batch_size: int,
        autocast: Callable[[], AbstractContextManager[object]] = nullcontext,  # around the losses
    ) -> None:
        for t in tasks:
            reason = unvectorizable(t.model, t.objective)
            if reason is not None:
                raise ValueError(f"{t.run.path}: cannot be vectorised: {reason}")
        self.tasks = list(tasks)
        self.critic_steps, self.batch_size, self.autocast = critic_steps, batch_size, autocast
        self.objectives = [
            t.objective for t in tasks if isinstance(t.objective, VariationalDivergence)
        ]
        self.models = StackedNetwork([t.model for t in tasks])
        self.critics = StackedNetwork([o.critic for o in self.objectives])
        self.model_optimizer = StackedOptimizer(self.models, [t.optimizer for t in tasks])
        self.critic_optimizer = StackedOptimizer(
            self.critics, [t.critic_optimizer for t in tasks if t.critic_optimizer is not None]
        )
        # Consecutive runs whose objectives compute the same losses from the critic's outputs
        # (equal `loss_key`s) share one call.
        self.buckets: list[tuple[VariationalDivergence, slice]] = []
        start = 0
        for k in range(1, len(tasks) + 1):
            if k == len(tasks) or self._loss_key(k) != self._loss_key(start):
                self.buckets.append((self.objectives[start], slice(start, k)))
                start = k

    def _loss_key(self, k: int) -> tuple[object, ...]:
        return self.objectives[k].loss_key

    def _draw(self) -> tuple[Tensor, Tensor]:
        """Each run's data batch and latents from its own generator: stacked, (K, n, ·)."""
        batches = [t.splits.batch(self.batch_size, t.generator) for t in self.tasks]
        noise = [t.model.noise(self.batch_size, t.generator) for t in self.tasks]
        return torch.stack(batches), torch.stack(noise)

    def _spread(self, *like: Tensor) -> list[Tensor | None]:
        """Each run's instance noise for points like each of `like` (K, n, ·), in their dtypes,
        drawn after its batch and latents as alone (`VariationalDivergence.noisy`): stacked,
        (K, n · copies, ·); None without instance noise."""
        drawn: list[list[Tensor]] = [[] for _ in like]
        for k, (t, objective) in enumerate(zip(self.tasks, self.objectives, strict=True)):
            if objective.spread is not None:
                kernel = objective.spread.kernel_at(objective.step)
                for noise, x in zip(drawn, like, strict=True):
                    shape = tuple(x[k].shape)
                    noise.append(
                        kernel.noise_for(shape, objective.spread_samples, t.generator, x.dtype)
                    )
        return [torch.stack(noise) if noise else None for noise in drawn]

    @staticmethod
    def _noisy(x: Tensor, noise: Tensor | None) -> Tensor:
        """x, or `spread_samples` copies of each of its points plus their noise (K, rows, ·), as
        `SpreadKernel.add_noise` makes them."""
        if noise is None:
            return x
        copies = noise.shape[1] // x.shape[1]
        return (x.repeat_interleave(copies, dim=1) if copies > 1 else x) + noise.to(x)

    def __call__(self, step: int) -> dict[str, Tensor]:
        model, critic = self.models.module, self.critics.module
        assert isinstance(model, GenerativeModel)
        generate = model.transform
        for objective in self.objectives:
            objective.begin_step(step)
        logged: dict[str, Tensor] = {}
        for _ in range(self.critic_steps):
            real, z = self._draw()
            parts: dict[str, list[Tensor]] = {}
            with self.autocast():
                with torch.no_grad():
                    fake = generate(z)
                fake_noise, real_noise = self._spread(fake, real)
                fake = self._noisy(fake, fake_noise)
                real = self._noisy(real, real_noise)
                m = real.shape[1]
                v = critic(torch.cat([real, fake], dim=1))  # real and fake in one pass, (K, 2m)
                for objective, rows in self.buckets:
                    loss, metrics = objective.critic_terms(v[rows, :m], v[rows, m:])
                    for name, value in {"critic": loss, **metrics}.items():
                        parts.setdefault(name, []).append(value)
            per_run = {name: _cat(values) for name, values in parts.items()}
            self.critics.zero_grad()
            per_run.pop("critic").sum().backward()  # independent runs: each its own gradient
            self.critic_optimizer.step()
            for objective in self.objectives:  # (a no-op: critic averaging trains alone)
                objective.after_critic_step()
            add_critic_metrics(logged, per_run, self.critic_steps)
        _, z = self._draw()  # (the batch is drawn, as alone, and not used)
        self.critics.requires_grad_(False)  # gradients flow only into the generators
        with self.autocast():
            fake = generate(z)
            (fake_noise,) = self._spread(fake)
            v = critic(self._noisy(fake, fake_noise))
            loss = _cat([objective.model_terms(v[rows]) for objective, rows in self.buckets])
        self.models.zero_grad()
        loss.sum().backward()
        self.critics.requires_grad_(True)
        self.model_optimizer.step()
        logged["loss"] = loss.detach()
        return logged


def _cat(parts: list[Tensor]) -> Tensor:
    """The buckets' values, one per run, as one (K,) tensor."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
