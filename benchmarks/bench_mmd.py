"""`objective=mmd`'s training step against `objective=ns_gan`'s, both at their defaults.

Both runs are the shipped config (Hydra's compose, the same validation and builders as `gandiv
train`) of the same model and data (`model=gaussian` on the default mixture unless `--set` says
otherwise), trained by gandiv's own loop (logging every 100 steps, no evaluation or figures):

- **mmd**: `objective=mmd` at its defaults (seven absolute bandwidths, batch 512);
- **mmd, earlier estimator**: the same run with the kernel sums of commit 384eddb
  (`torch.cdist` over the pooled batch, one autograd graph per bandwidth), for the before/after
  ratio;
- **ns_gan**: `objective=ns_gan` at its defaults (its MLP critic, `trainer: game`).

The loops run interleaved in rounds (order alternating), so noise hits them alike: read the
per-round ratios. `python benchmarks/bench_mmd.py --rounds 5`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from unittest import mock

import torch
from hydra import compose, initialize_config_module
from torch import Tensor

import gandiv.objectives.mmd as mmd_module
from bench_gan import steps_of, steps_per_s, task_of
from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.splits import ToySplits


def earlier_mmd2_unbiased(
    x: Tensor, y: Tensor, bandwidths: Sequence[float] | Tensor, gram: bool = False
) -> Tensor:
    """The unbiased MMD² as commit 384eddb computed it (the before column)."""
    n, m = len(x), len(y)
    both = torch.cat([x, y])
    sq = torch.cdist(both, both).pow(2)
    kernel = sum(torch.exp(-sq / (2 * s**2)) for s in bandwidths)
    assert isinstance(kernel, Tensor)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    off_diagonal_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    off_diagonal_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_diagonal_xx + off_diagonal_yy - 2 * k_xy.mean()


def loop(objective: str, settings: list[str], earlier: bool = False) -> Callable[[int], object]:
    """`run(steps)`: gandiv's loop on the shipped config of `objective` with `settings`."""
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        config = C.validate_train_config(
            compose("train", overrides=[f"objective={objective}", *settings])
        )
    data = build_dataset(config.dataset)
    torch.manual_seed(0)
    model = build_model(config.model, data.dim)
    built = build_objective(
        config.objective, data, config.critic, config.trainer.grid_points, model=model
    )
    splits = ToySplits(data, None, 2, 0)
    task = task_of(config, model, built, splits, torch.Generator().manual_seed(0))
    trainer = config.trainer
    run = steps_of(
        task, critic_steps=trainer.critic_steps, batch_size=trainer.batch_size, log_every=100
    )

    def patched(steps: int) -> object:
        context: AbstractContextManager[object] = (
            mock.patch.object(mmd_module, "mmd2_unbiased", earlier_mmd2_unbiased)
            if earlier
            else nullcontext()
        )
        with context:
            return run(steps)

    return patched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per loop and round")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every loop")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loops = {
        "mmd": loop("mmd", args.set),
        "mmd, earlier estimator": loop("mmd", args.set, earlier=True),
        "ns_gan": loop("ns_gan", args.set),
    }
    rates: dict[str, list[float]] = {name: [] for name in loops}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        for name in loops if round_ % 2 == 0 else reversed(list(loops)):
            rates[name].append(steps_per_s(loops[name], args.seconds))
    print(f"{args.rounds} rounds in {time.perf_counter() - started:.0f} s, settings: {args.set}")
    print(
        "| loop | steps/s (median) | step time / ns_gan's step time (median, range over rounds) |"
    )
    print("|---|---|---|")
    for name, values in rates.items():
        ratios = [g / v for v, g in zip(values, rates["ns_gan"], strict=True)]
        print(
            f"| {name} | {statistics.median(values):.1f} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    before = [a / e for e, a in zip(rates["mmd, earlier estimator"], rates["mmd"], strict=True)]
    print(
        f"mmd step time, the earlier estimator / this one: {statistics.median(before):.2f} "
        f"({min(before):.3f}–{max(before):.3f})"
    )


if __name__ == "__main__":
    main()
