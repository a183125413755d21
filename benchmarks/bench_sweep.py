"""A sweep run by Hydra's basic launcher (one job after another, in one process) against the same
sweep run by gandiv's joblib launcher (jobs in parallel worker processes), side by side.

Each round runs both, in alternating order, as the user would type them (`gandiv train -m ...` in
a fresh process, from process start to the last file written). Read the ratio: the sequential
wall time over the parallel one. With n_jobs workers it is at most n_jobs; every worker pays its
own start-up (imports), which a short job does not amortise.

    python benchmarks/bench_sweep.py --jobs 4 --steps 6000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_sweep(launcher: list[str], jobs: int, steps: int, root: Path) -> float:
    seeds = ",".join(str(s) for s in range(jobs))
    args = [
        sys.executable,
        "-m",
        "gandiv",
        "train",
        "-m",
        *launcher,
        f"trainer.seed={seeds}",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps // 4}",
        "plot.every=0",
        f"hydra.sweep.dir={root}",
    ]
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    done = sum((root / str(job) / "summary.json").is_file() for job in range(jobs))
    if done != jobs:
        raise SystemExit(f"only {done} of {jobs} jobs finished in {root}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep (seeds)")
    parser.add_argument("--steps", type=int, default=6000, help="training steps per job")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib workers (-1: one per core)")
    args = parser.parse_args()

    launchers = {
        "basic (sequential)": [],
        "joblib (parallel)": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
    }
    times: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(launchers) if round_ % 2 == 0 else list(reversed(launchers))
            for name in order:
                root = Path(tmp) / f"{round_}-{name.split()[0]}"
                times[name].append(run_sweep(launchers[name], args.jobs, args.steps, root))
    print(
        f"{args.jobs}-job sweep, {args.steps} steps per job, {os.cpu_count()} cores, "
        f"median of {args.rounds} interleaved rounds"
    )
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:20s} {statistics.median(values):6.1f} s  (rounds: {runs})")
    ratio = [s / p for s, p in zip(*times.values(), strict=True)]
    rounds = ", ".join(f"{r:.2f}" for r in ratio)
    print(f"  sequential / parallel: {statistics.median(ratio):.2f}  (rounds: {rounds})")


if __name__ == "__main__":
    main()
