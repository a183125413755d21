"""Ground truth's share of a run: every toy dataset × model at the default evaluation cadence.

Each cell is one fresh `gandiv train` process at the default steps and `trainer.eval_every`
(both overridable here), with its summary.json's timings: `eval_time_s` (every ground-truth
evaluation, step 0 included) over `train_time_s` (the training loop, evaluation included) and over
`wall_time_s` (the whole run, from preparing to the last file). The objective is the one that
gives the pair in-training ground truth: maximum likelihood (`forward_kl`) where data and model
both have a density, the spread divergence (`objective=spread`, a one-dimensional latent) for the
generators without one, whose ground truth is between the spread distributions P̃ and Q̃. A pair
with neither (a Gaussian or a flow on a zero-width curve) is listed as having none. Shares, not
seconds: the machine is shared, and a share is measured inside one run.

    python benchmarks/bench_truth.py                     # every pair, the default run's length
    python benchmarks/bench_truth.py --datasets swiss_roll --models flow --steps 3000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DATASETS = ("mixture", "gaussian", "ring8", "grid25", "swiss_roll", "circle", "line", "ica")
MODELS = ("gaussian", "flow", "linear", "mlp")
DEGENERATE = ("circle", "line")  # zero-width curves at their defaults: no density
LATENT = ("linear", "mlp")  # deterministic generators: no density


def settings(dataset: str, model: str) -> list[str] | None:
    """The overrides of one pair, or None where it has no in-training ground truth."""
    if model in LATENT:
        return [f"dataset={dataset}", f"model={model}", "model.latent_dim=1", "objective=spread"]
    if dataset in DEGENERATE:
        return None
    return [f"dataset={dataset}", f"model={model}"]


def run(overrides: list[str], out: Path) -> dict[str, float] | str:
    command = [
        sys.executable,
        "-m",
        "gandiv",
        "train",
        *overrides,
        "plot.every=0",
        "trainer.progress=false",
        f"hydra.run.dir={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"refused (exit {done.returncode}): {last[-120:]}"
    summary = json.loads((out / "summary.json").read_text())
    evaluations = sum(
        1 for line in (out / "metrics.jsonl").read_text().splitlines() if 'kl_pq"' in line
    )
    return {
        "evaluations": evaluations,
        "eval_s": summary["eval_time_s"],
        "loop_s": summary["train_time_s"],
        "wall_s": summary["wall_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--steps", type=int, default=None, help="trainer.steps (default: 1000)")
    parser.add_argument("--eval-every", type=int, default=None, help="trainer.eval_every")
    parser.add_argument("--set", nargs="*", default=[], help="more overrides for every run")
    args = parser.parse_args()
    extra = list(args.set)
    if args.steps is not None:
        extra.append(f"trainer.steps={args.steps}")
    if args.eval_every is not None:
        extra.append(f"trainer.eval_every={args.eval_every}")
    print("| dataset | model | objective | evaluations | ground truth / loop | / wall |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            for model in args.models:
                overrides = settings(dataset, model)
                if overrides is None:
                    print(f"| {dataset} | {model} | — | no ground truth (no density) | | |")
                    continue
                objective = "spread" if model in LATENT else "forward_kl"
                result = run([*overrides, *extra], Path(tmp) / f"{dataset}-{model}")
                if isinstance(result, str):
                    print(f"| {dataset} | {model} | {objective} | {result} | | |")
                    continue
                if not result["evaluations"]:
                    print(f"| {dataset} | {model} | {objective} | no ground truth | | |")
                    continue
                loop = result["eval_s"] / result["loop_s"] if result["loop_s"] else 0.0
                wall = result["eval_s"] / result["wall_s"] if result["wall_s"] else 0.0
                print(
                    f"| {dataset} | {model} | {objective} | {result['evaluations']:.0f} | "
                    f"{loop:.1%} | {wall:.1%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
