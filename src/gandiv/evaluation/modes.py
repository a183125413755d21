"""Mode statistics of samples from a model of a Gaussian mixture (Srivastava et al. 2017, VEEGAN
§5.1; Metz et al. 2017, unrolled GANs): modes covered, high-quality samples, mode histogram."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gandiv.data.toy import Mixture

__all__ = ["COVERAGE_SHARE", "QUALITY_RADIUS", "mahalanobis", "mode_metrics"]

QUALITY_RADIUS = 3.0  # "within 3 std": Mahalanobis distance ≤ 3
COVERAGE_SHARE = 0.01  # a mode is covered by ≥ 1% of its expected number of samples
_CHUNK = 1 << 16


def mahalanobis(x: Tensor, mixture: Mixture) -> Tensor:
    """Mahalanobis distance ‖L_k⁻¹(x − μ_k)‖ (Σ_k = L_k L_kᵀ) to every component: (n, d) -> (n, K),
    float64."""
    chol = torch.linalg.cholesky(mixture.covs).to(x.device)  # (K, d, d)
    means = mixture.means.to(x.device)
    parts = []
    for xs in x.detach().to(torch.float64).split(_CHUNK):
        diff = (xs[None, :, :] - means[:, None, :]).transpose(1, 2)  # (K, d, n)
        z = torch.linalg.solve_triangular(chol, diff, upper=False)
        parts.append(z.square().sum(1).sqrt().T)
    return torch.cat(parts) if parts else x.new_empty(0, len(means), dtype=torch.float64)


def _js(h: Tensor, w: Tensor) -> float:
    """Jensen–Shannon divergence ½KL(h‖m) + ½KL(w‖m), m = (h + w)/2, of two histograms (nats)."""
    m = 0.5 * (h + w)
    return float(0.5 * torch.xlogy(h, h / m).sum() + 0.5 * torch.xlogy(w, w / m).sum())


def mode_metrics(samples: Tensor, mixture: Mixture) -> dict[str, float]:
    """Mode statistics of `samples` (n, d) against the components of `mixture`.

    A sample is *within 3 std* of component k when its Mahalanobis distance to it,
    √((x − μ_k)ᵀ Σ_k⁻¹ (x − μ_k)), is at most 3.

    * ``covered``: components k within 3 std of which lie at least 1% of their expected number
      w_k · n of samples (a sample may count for several overlapping components); ``n_modes``: K.
    * ``high_quality``: share of the samples within 3 std of some component.
    * ``hist_js``: Jensen–Shannon divergence (nats, ≤ log 2) between the histogram of the
      high-quality samples over components, each assigned to its Mahalanobis-nearest component,
      and the mixture weights; log 2 when no sample is of high quality.

    For a perfect sample in d dimensions ``high_quality`` → P(χ²_d ≤ 9) (0.989 in 2-D).
    """
    if samples.ndim != 2 or samples.shape[1] != mixture.dim or len(samples) == 0:
        raise ValueError(
            f"samples must have shape (n, {mixture.dim}) with n ≥ 1, got {tuple(samples.shape)}"
        )
    n, k = len(samples), len(mixture.weights)
    distance = mahalanobis(samples, mixture)
    within = distance <= QUALITY_RADIUS
    weights = mixture.weights.to(torch.float64)
    counts = within.sum(0).cpu().to(torch.float64)  # samples within 3 std of each component
    covered = int((counts >= COVERAGE_SHARE * weights * n).sum())
    good = within.any(1)
    nearest = distance[good].argmin(1).cpu()
    if len(nearest) == 0:
        hist_js = math.log(2.0)
    else:
        histogram = torch.bincount(nearest, minlength=k).to(torch.float64) / len(nearest)
        hist_js = _js(histogram, weights)
    return {
        "covered": covered,
        "n_modes": k,
        "high_quality": float(good.to(torch.float64).mean()),
        "hist_js": hist_js,
    }
