"""gandiv's GAN training loop against a plain PyTorch reference loop, with this machine's limit.

For each shape (MLP width × batch) on the default 2-D mixture:

- **gandiv**: `objective=ns_gan model=mlp` built from the shipped config (Hydra's compose, the same
  validation and builders as `gandiv train`) and trained by gandiv's own loop
  (`gandiv.training.loop.train`, logging every 100 steps, no evaluation or figures).
- **reference**: what a careful PyTorch user writes: MLP G and D of the same shapes, Adam, the
  non-saturating BCE GAN step (one D step, one G step), data drawn each step, `.item()` of both
  losses each step for logging.
- **limit**: the time a step cannot beat on this machine: its matrix-multiply FLOPs over the
  measured `torch.mm` rate at that shape, plus its operator dispatches (counted, the fewer of the
  two loops) times the measured cost of one small operator.

The two loops run interleaved in rounds, with the same thread count, so noise hits both alike:
read the ratios. `python benchmarks/bench_gan.py --rounds 3`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective, build_optimizer
from gandiv.data.splits import ToySplits
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective
from gandiv.training.loop import BatchSource, Cadence, RunTask, TrainResult, train
from gandiv.training.run_dir import RunDirectory

SHAPES = [(128, 256), (128, 1024), (256, 256), (256, 1024)]
DEPTH = 3  # hidden layers of G and D (gandiv's default)
LATENT = 2


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


class _UnchunkedSplits(ToySplits):
    """Every batch drawn on its own (what `ToySplits.batch` did before drawing in chunks)."""

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.draw(n, generator)


def gan_config(width: int, batch: int) -> C.TrainConfig:
    """The shipped config of `objective=ns_gan model=mlp` with G and D of this width."""
    overrides = [
        "objective=ns_gan",
        "model=mlp",
        f"model.width={width}",
        f"critic.width={width}",
        f"trainer.batch_size={batch}",
    ]
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        return C.validate_train_config(compose("train", overrides=overrides))


def gandiv_loop(
    width: int,
    batch: int,
    *,
    adam: dict[str, Any] | None = None,
    chunked: bool = True,
    freeze_critic: bool = True,
    compile_nets: bool = False,
) -> Callable[[int], object]:
    """Run `steps` steps of gandiv's own loop (fresh run directory each call, objects kept).

    The keywords undo one lever each, for `bench_levers.py`: `adam` builds Adam with these
    options instead of `build_optimizer`'s; `chunked=False` draws every batch on its own;
    `freeze_critic=False` lets the model step compute the critic's weight gradients too;
    `compile_nets` compiles G's and D's networks with `torch.compile`.
    """
    config = gan_config(width, batch)
    data = build_dataset(config.dataset)
    torch.manual_seed(0)
    model = build_model(config.model, data.dim)
    objective = build_objective(
        config.objective, data, config.critic, config.trainer.grid_points, model=model
    )
    splits = (ToySplits if chunked else _UnchunkedSplits)(data, None, 2, 0)
    task = task_of(config, model, objective, splits, torch.Generator().manual_seed(0))
    if adam is not None:
        trainer = config.trainer
        betas = (trainer.betas[0], trainer.betas[1])
        task.optimizer = torch.optim.Adam(model.parameters(), lr=trainer.lr, betas=betas, **adam)
        task.critic_optimizer = torch.optim.Adam(
            objective.critic_parameters(), lr=trainer.lr, betas=betas, **adam
        )
    critic = objective.critic
    assert isinstance(critic, nn.Module)
    if not freeze_critic:
        critic.requires_grad_ = lambda requires_grad=True: critic  # type: ignore[method-assign]
    if compile_nets:  # the networks' forward (nn.Module.compile() compiles nothing here)
        for net in (model.net, critic.net):
            assert isinstance(net, nn.Module)
            net.forward = torch.compile(net.forward, dynamic=False)
    loop = steps_of(task, critic_steps=1, batch_size=batch, log_every=100)
    return loop


def task_of(
    config: C.TrainConfig,
    model: GenerativeModel,
    objective: Objective,
    splits: BatchSource,
    generator: torch.Generator,
    run: RunDirectory | None = None,
) -> RunTask:
    """A run's parts with its optimisers built as `gandiv train` builds them (no evaluation,
    figures or config; `run`: a placeholder that `steps_of` replaces)."""
    trainer = config.trainer
    return RunTask(
        run=run or RunDirectory(tempfile.mkdtemp(prefix="bench-")),
        splits=splits,
        model=model,
        objective=objective,
        optimizer=build_optimizer(
            [*model.parameters(), *objective.joint_parameters()],
            trainer.optimizer,
            trainer.lr_g or trainer.lr,
            trainer.betas,
        ),
        critic_optimizer=build_optimizer(
            objective.critic_parameters(),
            trainer.optimizer,
            trainer.lr_d or trainer.lr,
            trainer.betas_d or trainer.betas,
        )
        if objective.uses_critic
        else None,
        generator=generator,
        evaluate=None,
        config={},
    )


def steps_of(
    task: RunTask,
    *,
    critic_steps: int,
    batch_size: int,
    log_every: int,
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> Callable[[int], TrainResult]:
    """`run(steps)`: `steps` steps of gandiv's own loop on `task`'s objects (kept between calls),
    logging every `log_every` steps, no evaluation or figures, into a fresh run directory."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    calls = iter(range(1_000_000))

    def run(steps: int) -> TrainResult:
        return train(
            dataclasses.replace(task, run=RunDirectory(tmp / str(next(calls)))),
            critic_steps=critic_steps,
            batch_size=batch_size,
            cadence=Cadence(steps, log_every, 0, 0),
            progress=False,
            autocast=autocast,
        )

    return run


def _mlp(inputs: int, outputs: int, width: int, activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Linear(inputs if i == 0 else width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def reference_loop(width: int, batch: int) -> Callable[[int], object]:
    """The canonical GAN step, written by hand."""
    torch.manual_seed(0)
    means = torch.tensor([[-2.0, -1.0], [2.0, 1.0]])
    G = _mlp(LATENT, 2, width, nn.ReLU)
    D = _mlp(2, 1, width, lambda: nn.LeakyReLU(0.2))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def data() -> torch.Tensor:
        return means[torch.randint(0, 2, (batch,))] + 0.6 * torch.randn(batch, 2)

    def run(steps: int) -> None:
        for _ in range(steps):
            real, fake = data(), G(torch.randn(batch, LATENT))
            loss_d = bce(D(real), ones) + bce(D(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(D(G(torch.randn(batch, LATENT))), ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            loss_d.item(), loss_g.item()

    return run


def step_flops(width: int, batch: int) -> float:
    """Matrix-multiply FLOPs of one GAN step (one D step, one G step), 2 per multiply-add.

    A linear layer costs 2·n·in·out forward and twice that backward (input and weight gradients).
    D step: G forward on n, D forward+backward on 2n (real and fake). G step: G forward+backward
    on n, D forward+backward on n (its input gradient is needed; its weight gradient is not).
    """
    g = LATENT * width + (DEPTH - 1) * width * width + width * 2
    d = 2 * width + (DEPTH - 1) * width * width + width * 1
    n = batch
    macs = g * n + 3 * d * 2 * n + 3 * g * n + 2 * d * n
    return 2.0 * macs


def mm_rate(width: int, batch: int, seconds: float = 0.3) -> float:
    """Measured FLOP/s of torch.mm at the step's main shape ((batch × width) @ (width × width))."""
    a, b = torch.randn(batch, width), torch.randn(width, width)
    for _ in range(10):
        torch.mm(a, b)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            torch.mm(a, b)
        count += 20
    return 2.0 * batch * width * width * count / (time.perf_counter() - started)


def op_cost(calls: int = 20_000) -> float:
    """Seconds per small operator (dispatch and allocation, no arithmetic to speak of)."""
    x, y = torch.ones(8), torch.ones(8)
    started = time.perf_counter()
    for _ in range(calls):
        torch.add(x, y)
    return (time.perf_counter() - started) / calls


def dispatches(run: Callable[[int], object], steps: int = 100) -> float:
    """Operators dispatched per step (averaged over `steps`, loop bookkeeping included)."""
    with _CountOps() as counter:
        run(steps)
    return counter.count / steps


def steps_per_s(run: Callable[[int], object], seconds: float) -> float:
    started = time.perf_counter()
    run(5)
    probe = max(5.0 / (time.perf_counter() - started) * seconds, 20)
    steps = int(probe)
    started = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - started)


def interleaved(
    loops: dict[str, Callable[[int], object]],
    rounds: int,
    rate: Callable[[Callable[[int], object]], float],
) -> dict[str, float]:
    """The median `rate` of each loop over `rounds` rounds, the order alternating between rounds
    (so that load drifting over a run hits every loop alike)."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for round_ in range(rounds):
        for name in loops if round_ % 2 == 0 else reversed(list(loops)):
            rates[name].append(rate(loops[name]))
    return {name: statistics.median(values) for name, values in rates.items()}


def print_header(header: str) -> None:
    """A markdown table's header and rule."""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per shape")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (gandiv's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.rounds} rounds")
    print_header(
        "| width | batch | reference steps/s | gandiv steps/s | gandiv / reference "
        "| limit steps/s | gandiv / limit | dispatches (gandiv, reference) |"
    )
    per_op = op_cost()
    for width, batch in SHAPES:
        loops = {"reference": reference_loop(width, batch), "gandiv": gandiv_loop(width, batch)}
        rates = interleaved(loops, args.rounds, lambda run: steps_per_s(run, args.seconds))
        counts = {name: dispatches(run) for name, run in loops.items()}
        limit = step_flops(width, batch) / mm_rate(width, batch) + min(counts.values()) * per_op
        ref, ours = rates["reference"], rates["gandiv"]
        print(
            f"| {width} | {batch} | {ref:.0f} | {ours:.0f} | {ours / ref:.2f} | {1 / limit:.0f} "
            f"| {ours * limit:.2f} | {counts['gandiv']:.0f}, {counts['reference']:.0f} |"
        )
    print(f"one small operator: {per_op * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
