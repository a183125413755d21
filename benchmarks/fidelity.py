"""The fidelity suite: does every objective reach its divergence at the defaults a user gets?

Trains each objective at its own defaults (no other overrides than the problem and the seed) on
several toy problems × seeds, a Gaussian model throughout, and writes one table row per
(problem, objective): the divergence the objective minimises with an optimal critic (its target),
the target's global ideal over the Gaussians (from the run's summary.json: `ideal`), the value the
fit achieved (mean ± sd over seeds), the gap, the largest error of the fit in any mean or standard
deviation against the ideal, and how many seeds landed within the tolerance (0.1 in every mean
and standard deviation). Runs without a known target (`ns_gan`, `mmd`) are listed with their
nearest-ideal facts left blank. This is the f-GAN paper's direct-versus-GAN table for the whole
catalogue.

    python benchmarks/fidelity.py                       # every objective, every problem, 5 seeds
    python benchmarks/fidelity.py --problems default --seeds 2 --objectives gan logit_gan
    python benchmarks/fidelity.py --set trainer.lr=0.005 trainer.critic_steps=5   # a search point

`--set` adds overrides to every run: the search for the defaults is this script run at each
candidate point (the table of the search is in docs/fidelity.md). Runs go into --root
(default: a temporary directory), `--workers` at a time; the table is printed and written as
fidelity.md and fidelity.csv into --root (and to --out when given).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 0.1  # in every mean and standard deviation of the fit against its ideal

# Toy problems: the shipped default mixture, the f-GAN paper's 1-D mixture, and a 2-D mixture
# with correlated components of unequal weight (none of the three is the others' special case).
PROBLEMS: dict[str, list[str]] = {
    "default": [],
    "fgan_1d": [
        "dataset.weights=[0.35,0.65]",
        "dataset.means=[[-1.0],[1.2]]",
        "dataset.stds=[0.6,0.9]",
    ],
    "tilted_2d": [
        "dataset.weights=[0.6,0.4]",
        "dataset.means=[[-1.5,0.5],[2.0,-1.0]]",
        "dataset.stds=null",
        "dataset.covs=[[[1.0,0.5],[0.5,0.8]],[[0.3,0.0],[0.0,1.2]]]",
    ],
}

# objective settings: a label and its overrides
OBJECTIVES: dict[str, list[str]] = {
    "forward_kl": ["objective=forward_kl"],
    "reverse_kl": ["objective=reverse_kl"],
    "gan": ["objective=gan"],
    "ns_gan": ["objective=ns_gan"],
    "logit_gan": ["objective=logit_gan"],
    "reverse_kl_fgan": ["objective=reverse_kl_fgan"],
    **{
        f"fgan_{row}": ["objective=fgan", f"objective.divergence={row}"]
        for row in ("kl", "reverse_kl", "pearson", "neyman", "squared_hellinger", "jeffrey", "js")
    },
    **{
        f"js_pi_{pi}": ["objective=js_pi", f"objective.pi={pi}"] for pi in (0.1, 0.3, 0.5, 0.7, 0.9)
    },
    "lsgan": ["objective=lsgan"],
    "lsgan_minimax": ["objective=lsgan", "objective.generator=minimax"],
    "hinge": ["objective=hinge"],
    "gan_ratio_reverse_kl": [
        "objective=gan",
        "objective.generator=ratio",
        "objective.divergence=reverse_kl",
    ],
    **{
        f"poole_{row}": ["+experiment=poole_ratio", f"objective.divergence={row}"]
        for row in ("kl", "reverse_kl", "pearson", "jeffrey", "triangular")
    },
    "mmd": ["objective=mmd"],
}


def train(root: Path, problem: str, objective: str, seed: int, extra: list[str]) -> dict[str, Any]:
    """One `gandiv train` run; its summary with the facts the table needs."""
    run = root / problem / objective / str(seed)
    if not (run / "summary.json").is_file():
        args = [*PROBLEMS[problem], *OBJECTIVES[objective], f"trainer.seed={seed}", *extra]
        args += ["plot.every=0", "trainer.num_samples=1000", f"hydra.run.dir={run}"]
        done = subprocess.run(
            [sys.executable, "-m", "gandiv", "train", *args], capture_output=True, text=True
        )
        if done.returncode != 0 and not (run / "summary.json").is_file():
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            return {"status": f"exit {done.returncode}: {last}"}
    summary = json.loads((run / "summary.json").read_text())
    ideal = summary.get("ideal") or {}
    row: dict[str, Any] = {
        "status": summary.get("status", "?"),
        "health": (summary.get("health") or {}).get("status"),
        "target": ideal.get("divergence"),
        "ideal": ideal.get("value"),
        "achieved": ideal.get("achieved"),
        "gap": ideal.get("gap"),
        "w2": ideal.get("distance"),
        "kl_pq": summary.get("kl_pq"),
        "kl_qp": summary.get("kl_qp"),
    }
    params, target = summary.get("params") or {}, ideal.get("params")
    if target and params.get("mean") is not None:
        mean, cov = np.asarray(params["mean"]), np.asarray(params["cov"])
        ideal_mean, ideal_cov = np.asarray(target["mean"]), np.asarray(target["cov"])
        finite = np.isfinite(mean).all() and np.isfinite(cov).all()
        row["error"] = (
            max(
                float(np.abs(mean - ideal_mean).max()),
                float(np.abs(np.sqrt(np.diag(cov)) - np.sqrt(np.diag(ideal_cov))).max()),
            )
            if finite
            else math.inf
        )
    return row


def _mean_sd(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "—"
    if len(finite) == 1:
        return f"{finite[0]:.4f}"
    return f"{statistics.mean(finite):.4f} ± {statistics.stdev(finite):.4f}"


def table(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, str]]:
    rows = []
    for (problem, objective), runs in results.items():
        first = next((r for r in runs if r.get("target")), runs[0])
        errors = [r.get("error") for r in runs]
        within = sum(1 for e in errors if e is not None and e <= TOLERANCE)
        failed = [r["status"] for r in runs if r["status"] != "completed"]
        failed += ["unhealthy"] * sum(r.get("health") == "warning" for r in runs)
        rows.append(
            {
                "problem": problem,
                "objective": objective,
                "target": first.get("target") or "none known",
                "ideal": f"{first['ideal']:.4f}" if first.get("ideal") is not None else "—",
                "achieved": _mean_sd([r.get("achieved") for r in runs]),
                "gap": _mean_sd([r.get("gap") for r in runs]),
                "max error": (
                    f"{max(e for e in errors if e is not None):.3f}"
                    if any(e is not None for e in errors)
                    else "—"
                ),
                "within 0.1": f"{within}/{len(runs)}" if first.get("target") else "—",
                "kl_pq": _mean_sd([r.get("kl_pq") for r in runs]),
                "kl_qp": _mean_sd([r.get("kl_qp") for r in runs]),
                "not completed or unhealthy": "; ".join(
                    f"{failed.count(f)}× {f}" for f in sorted(set(failed))
                ),
            }
        )
    return rows


def markdown(rows: list[dict[str, str]], header: str) -> str:
    keys = list(rows[0])
    lines = [header, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument(
        "--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES)
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="overrides added to every run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--root", type=Path, default=None, help="run directories (reused)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (.md)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="gandiv-fidelity-"))
    cells = [(p, o) for p in args.problems for o in args.objectives]
    jobs = [(p, o, s) for p, o in cells for s in range(args.seeds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        done = list(pool.map(lambda job: train(root, *job, args.set), jobs))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in cells}
    for (problem, objective, _), row in zip(jobs, done, strict=True):
        results[(problem, objective)].append(row)
    rows = table(results)
    settings = " ".join(args.set) or "none (each objective's defaults)"
    header = (
        f"Fidelity: {args.seeds} seeds per cell; extra overrides: {settings}; "
        f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s"
    )
    text = markdown(rows, header)
    print(text)
    (root / "fidelity.md").write_text(text)
    with open(root / "fidelity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.out:
        args.out.write_text(text)
    print(f"runs and tables in {root}", file=sys.stderr)


if __name__ == "__main__":
    main()
