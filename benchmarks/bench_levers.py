"""Each single-run lever of the GAN step on its own: gandiv's loop with it against without it.

The loops are `bench_gan.gandiv_loop` (gandiv's own training loop, default GAN config) with one
lever undone or added, run interleaved in rounds in one process, so noise hits both alike; the
ratio (lever / without) is what to read. Levers: fused Adam (against the single-tensor and the
foreach implementations), the critic frozen during the model step, training data drawn in chunks,
two threads instead of one, `torch.compile` of G's and D's networks (slow to start: `--compile`).
`python benchmarks/bench_levers.py --rounds 5`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from bench_gan import dispatches, gandiv_loop, steps_per_s

Loop = Callable[[int], object]


def with_threads(run: Loop, threads: int) -> Loop:
    def wrapped(steps: int) -> None:
        torch.set_num_threads(threads)
        try:
            run(steps)
        finally:
            torch.set_num_threads(1)

    return wrapped


def compiled(width: int, batch: int) -> Loop:
    torch._dynamo.reset()  # compiled code is cached per code object: start each shape afresh
    started = time.perf_counter()
    run = gandiv_loop(width, batch, compile_nets=True)
    run(3)
    print(f"  (torch.compile at {width} × {batch}: {time.perf_counter() - started:.1f} s)")
    return run


# lever: (without it, with it), each a loop factory of (width, batch)
LEVERS: dict[str, tuple[Callable[[int, int], Loop], Callable[[int, int], Loop]]] = {
    "Adam foreach (vs single-tensor)": (
        partial(gandiv_loop, adam={"foreach": False}),
        partial(gandiv_loop, adam={"foreach": True}),
    ),
    "Adam fused (vs single-tensor)": (partial(gandiv_loop, adam={"foreach": False}), gandiv_loop),
    "critic frozen in the model step": (partial(gandiv_loop, freeze_critic=False), gandiv_loop),
    "data drawn in chunks": (partial(gandiv_loop, chunked=False), gandiv_loop),
    "2 threads (vs 1)": (gandiv_loop, lambda w, b: with_threads(gandiv_loop(w, b), 2)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per lever")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--shapes", default="128x256,256x1024", help="WIDTHxBATCH,...")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow start)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    levers = dict(LEVERS)
    if args.compile:
        levers["torch.compile of G and D"] = (gandiv_loop, compiled)
    print(f"torch {torch.__version__}, median of {args.rounds} rounds (range over rounds)")
    print("| lever | width | batch | dispatches per step (without, with) | with / without |")
    print("|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        width, batch = (int(v) for v in shape.split("x"))
        for name, (make_without, make_with) in levers.items():
            loops = [make_without(width, batch), make_with(width, batch)]
            rates: list[list[float]] = [[], []]
            for round_ in range(args.rounds):
                for i in (0, 1) if round_ % 2 == 0 else (1, 0):
                    rates[i].append(steps_per_s(loops[i], args.seconds))
            ratios = [b / a for a, b in zip(*rates, strict=True)]
            ops = [dispatches(run) for run in loops]
            print(
                f"| {name} | {width} | {batch} | {ops[0]:.0f}, {ops[1]:.0f} "
                f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
