"""Regenerate the README's figures: `.venv/bin/python docs/make_figures.py` (about a minute).

Runs the real `gandiv train` for each fit into a scratch directory, then draws the data density
with each fitted model's density on top.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from gandiv.data.toy import Mixture
from gandiv.plotting.density import Panel, density_panels

HERE = Path(__file__).parent
FITS = {
    "forward KL (maximum likelihood)": ["objective=forward_kl"],
    "reverse KL": ["objective=reverse_kl"],
    "direct JS": ["objective=direct", "objective.divergence=js"],
}


def fit(args: list[str], root: Path) -> dict:
    cmd = [sys.executable, "-m", "gandiv", "train", *args, "trainer.steps=1500"]
    subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    summary = sorted(root.glob("outputs/*/*/summary.json"))[-1]
    result = json.loads(summary.read_text())
    summary.parent.rename(root / f"done-{len(list(root.glob('done-*')))}")
    return result


def main() -> None:
    data = Mixture.isotropic([0.5, 0.5], [[-2.0, -1.0], [2.0, 1.0]], [0.6, 0.6])
    xs, ys = np.linspace(-5, 5, 300), np.linspace(-4, 4, 240)
    points = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
    log_p = data.log_prob(points).numpy().reshape(len(ys), len(xs))
    panels = []
    with tempfile.TemporaryDirectory() as scratch:
        for title, args in FITS.items():
            summary = fit(args, Path(scratch))
            mean = torch.tensor(summary["params"]["mean"])
            cov = torch.tensor(summary["params"]["cov"], dtype=torch.float64)
            q = torch.distributions.MultivariateNormal(mean.double(), cov)
            log_q = q.log_prob(points).numpy().reshape(len(ys), len(xs))
            title = f"{title}\nKL(P‖Q)={summary['kl_pq']:.2f}  KL(Q‖P)={summary['kl_qp']:.2f}"
            panels.append(Panel(title, log_q))
    fig = density_panels(xs, ys, log_p, panels, "A Gaussian fitted to a two-component mixture")
    fig.savefig(HERE / "gaussian_fits.png", dpi=110)


if __name__ == "__main__":
    main()
