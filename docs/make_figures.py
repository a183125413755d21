"""Regenerate the README's figures: `.venv/bin/python docs/make_figures.py [FUNCTION ...]` (a few
minutes; name functions to redraw only those).

Every figure comes from real `gandiv train` runs in a scratch directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from gandiv.data.manifold import Circle
from gandiv.data.toy import Mixture
from gandiv.plotting.density import Panel, density_panels

HERE = Path(__file__).parent
# the shipped default mixture (conf/dataset/mixture.yaml), drawn on a box that holds it
SHIPPED = OmegaConf.load(HERE.parent / "src" / "gandiv" / "conf" / "dataset" / "mixture.yaml")
XS, YS = np.linspace(-6, 6, 300), np.linspace(-4.5, 5, 240)
FITS = {
    "forward KL (maximum likelihood)": ["objective=forward_kl"],
    "reverse KL": ["objective=reverse_kl"],
    "direct JS": ["objective=direct", "objective.divergence=js"],
}


def gandiv(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "gandiv", *args], cwd=root, check=True, capture_output=True
    )


def newest(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[-1]


def default_mixture() -> Mixture:
    return Mixture.isotropic(list(SHIPPED.weights), list(SHIPPED.means), list(SHIPPED.stds))


def gaussian_fits(scratch: Path) -> None:
    data = default_mixture()
    xs, ys = XS, YS
    points = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
    log_p = data.log_prob(points).numpy().reshape(len(ys), len(xs))
    panels = []
    for title, args in FITS.items():
        root = scratch / title.split()[0]
        root.mkdir()
        gandiv(root, "train", *args, "plot.every=0")
        summary = json.loads(newest(root, "outputs/*/*/summary.json").read_text())
        mean = torch.tensor(summary["params"]["mean"], dtype=torch.float64)
        cov = torch.tensor(summary["params"]["cov"], dtype=torch.float64)
        log_q = torch.distributions.MultivariateNormal(mean, cov).log_prob(points).numpy()
        title = f"{title}\nKL(P‖Q)={summary['kl_pq']:.2f}  KL(Q‖P)={summary['kl_qp']:.2f}"
        panels.append(Panel(title, log_q.reshape(len(ys), len(xs))))
    fig = density_panels(xs, ys, log_p, panels, "A Gaussian fitted to a two-component mixture")
    fig.savefig(HERE / "gaussian_fits.png", dpi=110)


IDEALS = {
    "gan (target JS)": ["objective=gan"],
    "logit_gan (target KL(Q‖P))": ["objective=logit_gan"],
    "reverse_kl_fgan (target KL(Q‖P))": ["objective=reverse_kl_fgan"],
    "js_pi, π = 0.1 (target JS_0.1)": ["objective=js_pi", "objective.pi=0.1"],
}


def ideal_vs_achieved(scratch: Path) -> None:
    """Adversarial fits at their defaults (blue) beside the ideal fit of each one's target
    (dashed)."""
    data = default_mixture()
    xs, ys = XS, YS
    points = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
    log_p = data.log_prob(points).numpy().reshape(len(ys), len(xs))

    def log_density(params: dict) -> np.ndarray:
        mean = torch.tensor(params["mean"], dtype=torch.float64)
        cov = torch.tensor(params["cov"], dtype=torch.float64)
        normal = torch.distributions.MultivariateNormal(mean, cov)
        return normal.log_prob(points).numpy().reshape(len(ys), len(xs))

    panels = []
    for title, args in IDEALS.items():
        root = scratch / title.split()[0]
        root.mkdir()
        gandiv(root, "train", *args, "plot.every=0")
        summary = json.loads(newest(root, "outputs/*/*/summary.json").read_text())
        ideal = summary["ideal"]
        title = f"{title}\ngap {ideal['gap']:.3f} nats, 2-Wasserstein {ideal['distance']:.2f}"
        panels.append(
            Panel(title, log_density(summary["params"]), ideals=[log_density(ideal["params"])])
        )
    fig = density_panels(
        xs, ys, log_p, panels, "Adversarial fits against the ideal of their target"
    )
    fig.savefig(HERE / "ideal_vs_achieved.png", dpi=110)


def swiss_roll(scratch: Path) -> None:
    root = scratch / "swiss"
    root.mkdir()
    gandiv(root, "train", "+experiment=huszar_swiss_roll")
    run = newest(root, "outputs/*/*/summary.json").parent
    shutil.copy(run / "figures" / "gradient_field.png", HERE / "swiss_roll_gradient_field.png")
    shutil.copy(run / "animation.gif", HERE / "swiss_roll_logit_gan.gif")


def pi_sweep(scratch: Path) -> None:
    root = scratch / "pi"
    root.mkdir()
    gandiv(
        root, "train", "-m", "objective=js_pi", "objective.pi=0.1,0.3,0.5,0.7,0.9", "plot.every=0"
    )
    shutil.copy(newest(root, "multirun/*/*/sweep.png"), HERE / "huszar_pi_sweep.png")


def spread_sigma(scratch: Path) -> None:
    """The same spread fit of the circle for three σ: small σ sharpens the fit."""
    xs, ys = np.linspace(-1.6, 1.6, 240), np.linspace(-1.6, 1.6, 240)
    points = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))
    shown = Circle([0.0, 0.0], 1.0).thickened(0.03)  # the zero-width data, drawn visibly
    log_p = shown.log_prob(points).numpy().reshape(len(ys), len(xs))
    panels = []
    for sigma in (0.4, 0.2, 0.05):
        root = scratch / f"sigma-{sigma}"
        root.mkdir()
        gandiv(
            root, "train", "+experiment=barber_circle", f"objective.sigma={sigma}", "plot.every=0"
        )
        run = newest(root, "outputs/*/*/summary.json").parent
        summary = json.loads((run / "summary.json").read_text())
        samples = np.load(run / "samples.npy")
        off = np.abs(np.linalg.norm(samples, axis=1) - 1).mean()
        title = f"σ = {sigma}: KL(P̃‖Q̃) = {summary['spread_kl_pq']:.3f}\noff the circle: {off:.3f}"
        panels.append(Panel(title, None, samples[:1500]))
    fig = density_panels(xs, ys, log_p, panels, "Spread KL fits of a circle: mlp, latent_dim 1")
    fig.savefig(HERE / "spread_sigma.png", dpi=110)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        makers = (gaussian_fits, ideal_vs_achieved, swiss_roll, pi_sweep, spread_sigma)
        for make in makers if len(sys.argv) == 1 else [globals()[n] for n in sys.argv[1:]]:
            make(Path(scratch))


if __name__ == "__main__":
    main()
