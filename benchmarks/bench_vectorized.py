"""K toy GAN runs trained one after another against the same K runs as one vectorised group.

For each MLP width (G and D alike, depth 3) and K runs (seeds 0…K−1 of `objective=ns_gan
model=mlp` on the default 2-D mixture, built from the shipped config as `gandiv train` builds
them), one process times, interleaved in rounds:

- **sequential**: each run trained alone by gandiv's loop (`ObjectiveStep`, the single-run levers
  of `bench_levers.py` all in), one after the other;
- **vectorised**: the K runs in one `train_runs` call with `VectorizedStep` (what the vectorized
  launcher does).

Both log every 100 steps and skip evaluation and figures. It reports run-steps per second (K ×
steps over the time), the speed-up (sequential time / vectorised time) and the bound the FLOP
count sets on it: a vectorised group cannot take less than K times one step's matrix-multiply
FLOPs at the measured `torch.mm` rate, so the speed-up cannot exceed the sequential time of one
run-step over that. `python benchmarks/bench_vectorized.py --rounds 3`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench_gan import gan_config, interleaved, mm_rate, print_header, step_flops, task_of
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.splits import ToySplits
from gandiv.training.loop import Cadence, ObjectiveStep, RunTask, train_runs
from gandiv.training.run_dir import RunDirectory
from gandiv.training.vectorized import VectorizedStep

WIDTHS = (32, 64, 128)
SIZES = (1, 2, 4, 8, 16, 32)
BATCH = 256


def build_runs(width: int, batch: int, k: int, device: torch.device) -> list[RunTask]:
    """Seeds 0…k−1 of the default GAN run at this width, built as `gandiv train` builds them."""
    config = gan_config(width, batch)
    trainer = config.trainer
    data = build_dataset(config.dataset)
    tasks = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = build_model(config.model, data.dim).to(device)
        objective = build_objective(
            config.objective, data, config.critic, trainer.grid_points, model=model
        ).to(device)
        splits = ToySplits(data, None, 2, seed).to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        tasks.append(task_of(config, model, objective, splits, generator))
    return tasks


def runners(
    width: int, batch: int, k: int, device: torch.device
) -> dict[str, Callable[[int], object]]:
    """`run(steps)` for both ways of training the same K runs (a fresh run directory per call;
    each call ends with a logged line, a host-device sync point)."""
    tasks = build_runs(width, batch, k, device)
    calls = iter(range(1_000_000))
    root = Path(tempfile.mkdtemp(prefix="bench-vec-"))

    def fresh(task: RunTask) -> RunTask:
        return dataclasses.replace(task, run=RunDirectory(root / str(next(calls))))

    def sequential(steps: int) -> None:
        for task in tasks:
            task = fresh(task)
            make_step = partial(lambda step, _: step, ObjectiveStep(task, 1, batch))
            train_runs([task], make_step, Cadence(steps, 100, 0, 0), False)

    step = VectorizedStep(tasks, 1, batch)

    def vectorised(steps: int) -> None:
        group = [fresh(task) for task in tasks]
        step.tasks = group  # the same runs and stacks, new run directories
        train_runs(group, lambda _: step, Cadence(steps, 100, 0, 0), False)

    return {"sequential": sequential, "vectorised": vectorised}


def run_steps_per_s(run: Callable[[int], object], k: int, seconds: float) -> float:
    started = time.perf_counter()
    run(5)
    steps = int(max(5.0 / (time.perf_counter() - started) * seconds, 20))
    started = time.perf_counter()
    run(steps)
    return k * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per point")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (gandiv's default)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="values of K")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(
        f"torch {torch.__version__}, {device}, {args.threads} thread(s), batch {args.batch}, ",
        end="",
    )
    print(f"median of {args.rounds} rounds")
    print_header(
        "| width | K | sequential run-steps/s | vectorised run-steps/s | speed-up "
        "| FLOP bound on the speed-up |"
    )
    for width in args.widths:
        # (the FLOP bound uses the CPU's measured torch.mm rate: on a GPU it is not computed)
        flop_time = step_flops(width, args.batch) / mm_rate(width, args.batch)
        for k in args.sizes:
            rates = interleaved(
                runners(width, args.batch, k, device),
                args.rounds,
                lambda run, k=k: run_steps_per_s(run, k, args.seconds),
            )
            seq, vec = rates["sequential"], rates["vectorised"]
            bound = f"{1 / (seq * flop_time):.2f}" if device.type == "cpu" else "—"
            print(f"| {width} | {k} | {seq:.0f} | {vec:.0f} | {vec / seq:.2f} | {bound} |")


if __name__ == "__main__":
    main()
