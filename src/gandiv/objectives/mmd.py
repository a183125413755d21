"""Moment matching without a critic: the model minimises the kernel MMD² to the data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gandiv.evaluation.distances import median_distance, mmd2_unbiased
from gandiv.models.base import GenerativeModel
from gandiv.objectives.base import Objective


class MMD(Objective):
    """Minimise the unbiased MMD² between a data batch and a model batch (Li et al. 2015;
    Dziugaite et al. 2015), with a sum of Gaussian kernels k(x, y) = Σ_σ exp(−‖φ(x) − φ(y)‖²/2σ²).

    φ is `features`, a fixed network that is never trained, or the identity (None): the kernel
    compares the data themselves. The σ are `bandwidths`; with `median_scale` they are multiples
    of s, the median pairwise distance ‖φ(x_i) − φ(x_j)‖ of the first training batch (the median
    heuristic; Gretton et al. 2012, §8), measured once and kept in the buffer ``scale``, so the
    kernel is one fixed function for the whole run and its resumptions. The kernels are computed
    in float32, also under bf16 autocast, from inner products (`mmd2_unbiased`).
    """

    name = "mmd"
    scale: Tensor | None
    factors: Tensor | None

    def __init__(
        self,
        bandwidths: Sequence[float],
        features: nn.Module | None = None,
        median_scale: bool = False,
    ) -> None:
        super().__init__()
        self.bandwidths = tuple(bandwidths)
        self.features = features.requires_grad_(False) if features is not None else None
        self.measured = False  # `scale` holds the median (measured, or loaded from a checkpoint)
        if median_scale:
            self.register_buffer("scale", torch.tensor(float("nan")))
            self.register_buffer("factors", torch.tensor(self.bandwidths), persistent=False)
            self.register_load_state_dict_post_hook(MMD._loaded)
        else:
            self.scale = self.factors = None

    @staticmethod
    def _loaded(module: nn.Module, _incompatible_keys: object) -> None:
        assert isinstance(module, MMD) and module.scale is not None
        module.measured = bool(module.scale.isfinite())  # (NaN: saved before the first batch)

    def embed(self, x: Tensor) -> Tensor:
        """φ(x) as (n, d) float32 rows."""
        if self.features is not None:
            x = self.features(x)
        return x.reshape(len(x), -1).float()

    def kernel_bandwidths(self, data_features: Tensor, measure: bool) -> Sequence[float] | Tensor:
        """The σ of the kernels. With the median heuristic, s is measured on `data_features` when
        `measure` is set and s is not yet known (the first training batch: no host sync, the
        product stays on the device); before that, other callers (the figures) get σ from the
        median of their own `data_features`, which is not kept."""
        if self.scale is None or self.factors is None:
            return self.bandwidths
        if self.measured:
            return self.scale * self.factors
        with torch.no_grad():
            median = median_distance(data_features).to(self.scale.dtype)
            median = torch.where(median > 0, median, 1.0)  # all points equal: any σ will do
            if measure:
                self.scale.copy_(median)
                self.measured = True
        return median * self.factors

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        return self._loss(model.sample(len(batch), generator), batch, measure=True)

    def sample_loss(self, model: GenerativeModel, samples: Tensor, batch: Tensor) -> Tensor:
        return self._loss(samples, batch, measure=False)

    def _loss(self, samples: Tensor, batch: Tensor, measure: bool) -> Tensor:
        with torch.no_grad():  # the data's features need no gradient
            data_features = self.embed(batch)
        model_features = self.embed(samples)
        with torch.autocast(model_features.device.type, enabled=False):
            bandwidths = self.kernel_bandwidths(data_features, measure)
            return mmd2_unbiased(data_features, model_features, bandwidths)
