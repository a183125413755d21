"""Distances between two samples (no densities needed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidths: Sequence[float]) -> Tensor:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) with k = Σ_σ exp(−‖a − b‖² / 2σ²).

    The kernel is a sum of Gaussian kernels over `bandwidths`, characteristic for every σ > 0, so
    MMD² = 0 only when the two distributions are equal. x: (n, d), y: (m, d), n, m ≥ 2.
    """
    n, m = len(x), len(y)
    both = torch.cat([x, y])
    sq = torch.cdist(both, both).pow(2)
    kernel = sum(torch.exp(-sq / (2 * s**2)) for s in bandwidths)
    assert isinstance(kernel, Tensor)
    k_xx, k_yy, k_xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    off_diagonal_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    off_diagonal_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_diagonal_xx + off_diagonal_yy - 2 * k_xy.mean()
