"""A sweep run by Hydra's basic launcher (one job after another, in one process) against the same
sweep run by gandiv's joblib launcher (jobs in parallel worker processes) and by its vectorized
launcher (compatible jobs as one batched computation; a sweep of the default run, which it cannot
vectorise, runs as with the basic launcher: pass `--settings` of an adversarial run), side by side.

Each round also runs the jobs as separate `gandiv train` processes one after another (a shell
loop: the sequential sum of the jobs). Rounds run the three in alternating order, as the user would
type them, from process start to the last file written. Read the ratios to the parallel time:
with n_jobs workers they are at most n_jobs; every worker pays its own start-up (imports) once,
which the basic launcher pays once for all jobs.

    python benchmarks/bench_sweep.py --jobs 4 --steps 6000 --rounds 2
    python benchmarks/bench_sweep.py --jobs 8 --steps 3000 --settings model=mlp objective=ns_gan \
        model.width=32 critic.width=32 trainer.batch_size=256
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


def _gandiv(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gandiv", "train", *args], check=True, capture_output=True
    )


def run_sweep(
    launcher: list[str] | None, jobs: int, steps: int, root: Path, extra: list[str]
) -> float:
    """Wall time of the sweep; `launcher` None: one `gandiv train` process per job, in turn."""
    settings = [f"trainer.steps={steps}", f"trainer.eval_every={steps // 4}", "plot.every=0"]
    settings += extra
    started = time.perf_counter()
    if launcher is None:
        for job in range(jobs):
            _gandiv(f"trainer.seed={job}", *settings, f"hydra.run.dir={root / str(job)}")
    else:
        seeds = ",".join(str(s) for s in range(jobs))
        _gandiv("-m", *launcher, f"trainer.seed={seeds}", *settings, f"hydra.sweep.dir={root}")
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
    parser.add_argument("--settings", nargs="*", default=[], help="overrides of every job")
    args = parser.parse_args()

    launchers: dict[str, list[str] | None] = {
        "one process per job": None,
        "basic launcher": [],
        "joblib launcher": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
        "vectorized launcher": ["hydra/launcher=vectorized"],
    }
    times: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(launchers) if round_ % 2 == 0 else list(reversed(launchers))
            for name in order:
                root = Path(tmp) / f"{round_}-{name.split()[0]}"
                times[name].append(
                    run_sweep(launchers[name], args.jobs, args.steps, root, args.settings)
                )
    print(
        f"{args.jobs}-job sweep, {args.steps} steps per job, {os.cpu_count()} cores, median of "
        f"{args.rounds} interleaved rounds (wall time, process start to last file written)"
    )
    if args.settings:
        print("  every job: " + " ".join(args.settings))
    parallel = times["joblib launcher"]
    for name, values in times.items():
        ratio = statistics.median(v / p for v, p in zip(values, parallel, strict=True))
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"  {name:20s} {statistics.median(values):6.1f} s  {ratio:.2f}× the joblib time  "
            f"(rounds: {runs})"
        )


if __name__ == "__main__":
    main()
