"""The whole `gandiv train`, from process start to the last file written, and where its time goes.

Two runs, each a fresh `gandiv train` process: the default run (no overrides) and the default
adversarial toy run (`objective=ns_gan model=mlp`). Each run's summary.json says how long it
spent training, evaluating, drawing frames, writing checkpoints and drawing the final figures;
with the process's own wall time that splits the run into

- start-up: process start to the task's first line (interpreter, imports, Hydra's composition),
- set-up and final samples: validating the config, building data, model, objective, optimisers
  and the figures' grids; after training, samples.npy,
- training steps (the loop without the rest of this list), evaluation (ground-truth quadrature
  metrics at the eval cadence), animation frames, checkpoints,
- figures: the final figures/*.png and animation.gif/.mp4,
- exit: summary.json to the process's end (the last log line, interpreter shutdown).

Start-up probes (separate processes, interleaved with the runs) split the start-up: the bare
interpreter, `import torch`, `import gandiv.commands.train` (everything a run imports) and
`torch._dynamo`, which torch's optimisers import at their first construction. `--eval` also times
`gandiv eval` on each run with its parts (quadrature, kernel-density estimate, each independent
critic, modes, sample distances). `--against DIR` times the same runs with gandiv imported from
the source tree DIR (e.g. an earlier commit's ``src``) in the same rounds, for before/after ratios.

    python benchmarks/bench_run.py --rounds 3 --eval
    python benchmarks/bench_run.py --against /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNS = {"default": [], "ns_gan": ["objective=ns_gan", "model=mlp"]}
PROBES = {
    "python": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "import torch, torch._dynamo": ["-c", "import torch, torch._dynamo"],
    "import gandiv.commands.train": ["-c", "import gandiv.commands.train"],
    "gandiv --help": ["-m", "gandiv", "--help"],
    "gandiv train --help": ["-m", "gandiv", "train", "--help"],
}
PHASES = (
    "start-up",
    "set-up and final samples",
    "training steps",
    "evaluation",
    "frames",
    "checkpoints",
    "figures",
    "exit",
)
# gandiv eval's parts, by the module that calls them and the name it calls them under
EVAL_PARTS = {
    "ground_truth_metrics": "gandiv.evaluation.report",
    "kde_ground_truth": "gandiv.evaluation.report",
    "spread_metrics": "gandiv.evaluation.report",
    "independent_critics": "gandiv.commands.evaluate",
    "mode_metrics": "gandiv.evaluation.report",
    "sample_distances": "gandiv.evaluation.report",
}


def _environment(source: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _timed_process(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def time_run(overrides: list[str], directory: Path, env: dict[str, str]) -> dict[str, float]:
    """One `gandiv train` process: its wall time and phases (seconds)."""
    started_at = time.time()
    wall = _timed_process(["-m", "gandiv", "train", *overrides, f"hydra.run.dir={directory}"], env)
    summary = json.loads((directory / "summary.json").read_text())
    summary_written = (directory / "summary.json").stat().st_mtime - started_at
    last_file = max(p.stat().st_mtime for p in directory.rglob("*") if p.is_file()) - started_at
    eval_s, frames_s = summary["eval_time_s"], summary["frames_time_s"]
    checkpoint_s, figures_s = summary["checkpoint_time_s"], summary.get("figures_time_s", 0.0)
    loop_s = summary["train_time_s"]
    steps = loop_s - eval_s - frames_s - checkpoint_s
    return {
        "wall": wall,
        "last file": last_file,
        "outside the training loop": wall - steps,
        "start-up": summary_written - summary["wall_time_s"],
        "set-up and final samples": summary["wall_time_s"] - loop_s - figures_s,
        "training steps": steps,
        "evaluation": eval_s,
        "frames": frames_s,
        "checkpoints": checkpoint_s,
        "figures": figures_s,
        "exit": wall - summary_written,
    }


def _eval_parts(run: str) -> None:
    """(In a child process) `gandiv eval run=RUN` with its parts timed; prints them as JSON."""
    import importlib

    from gandiv.cli import main

    spent = dict.fromkeys(EVAL_PARTS, 0.0)

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    for name, caller in EVAL_PARTS.items():
        module = importlib.import_module(caller)
        setattr(module, name, timed(name, getattr(module, name)))
    main(["eval", f"run={run}"])
    report = json.loads((Path(run) / "eval.json").read_text())
    print(json.dumps({**spent, "eval_time_s": report["eval_time_s"]}))


def time_eval(directory: Path, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--eval-parts", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    wall = time.perf_counter() - started
    return {"wall": wall, **json.loads(out.strip().splitlines()[-1])}


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_runs(label: str, runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n{label}: medians of the seconds and of their shares of the process's wall time")
    print(f"  {'phase':26s}" + "".join(f"{name:>22s}" for name in runs))
    for key in ("wall", "last file", *PHASES, "outside the training loop"):
        cells = []
        for rows in runs.values():
            value = _median(rows, key)
            share = statistics.median(row[key] / row["wall"] for row in rows)
            cells.append(f"{value:8.3f} s {100 * share:5.1f} %")
        print(f"  {key:26s}" + "".join(f"{c:>22s}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--eval", action="store_true", help="also time `gandiv eval` (1 round)")
    parser.add_argument(
        "--against", metavar="DIR", help="also time gandiv imported from this source tree"
    )
    parser.add_argument("--eval-parts", metavar="RUN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_parts:
        _eval_parts(args.eval_parts)
        return

    versions = {"this tree": _environment(None)}
    if args.against:
        versions[f"against {args.against}"] = _environment(str(Path(args.against).resolve()))
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        v: {name: [] for name in RUNS} for v in versions
    }
    probes: dict[str, dict[str, list[float]]] = {v: {name: [] for name in PROBES} for v in versions}
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {_load()} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            for version in order:
                env = versions[version]
                for name, probe in PROBES.items():
                    probes[version][name].append(_timed_process(probe, env))
                for name, overrides in RUNS.items():
                    directory = Path(tmp) / f"{list(versions).index(version)}-{round_}-{name}"
                    runs[version][name].append(time_run(overrides, directory, env))
            print(f"  round {round_ + 1}: {_load()}", flush=True)
        for version in versions:
            report_runs(version, runs[version])
            print(f"\n{version}: start-up probes (medians, s)")
            for name, values in probes[version].items():
                print(f"  {name:30s} {statistics.median(values):7.3f}")
        if len(versions) == 2:
            this, other = versions
            print(f"\n{this} / {other}: medians of the per-round ratios")
            print(f"  {'phase':26s}" + "".join(f"{name:>10s}" for name in RUNS))
            for key in ("wall", "outside the training loop", *PHASES):
                cells = []
                for name in RUNS:
                    pairs = zip(runs[this][name], runs[other][name], strict=True)
                    ratios = [a[key] / b[key] for a, b in pairs if b[key] > 0]
                    cells.append(f"{statistics.median(ratios):10.2f}" if ratios else f"{'-':>10s}")
                print(f"  {key:26s}" + "".join(cells))
        if args.eval:
            print("\ngandiv eval of each run (1 round, s; share of the process's wall time)")
            for name in RUNS:
                timing = time_eval(Path(tmp) / f"0-0-{name}", versions["this tree"])
                wall = timing.pop("wall")
                parts = ", ".join(
                    f"{k} {v:.2f} ({100 * v / wall:.0f} %)" for k, v in timing.items() if v > 0
                )
                print(f"  {name:10s} wall {wall:.2f}: {parts}")
    print(f"\n{_load()} at the end")


if __name__ == "__main__":
    main()
