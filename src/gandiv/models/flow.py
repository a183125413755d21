"""A RealNVP affine coupling flow (Dinh, Sohl-Dickstein & Bengio 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gandiv.models.base import GenerativeModel, standard_normal, standard_normal_log_prob
from gandiv.models.mlp import mlp

# Each layer's log-scale is squashed to (−MAX_LOG_SCALE, MAX_LOG_SCALE): one bad step of an
# adversarial objective cannot then blow up exp(s).
MAX_LOG_SCALE = 3.0


class AffineCoupling(nn.Module):
    """One affine coupling layer, Dinh et al. 2017 eq. (9) with a binary mask b.

    y = b ⊙ x + (1 − b) ⊙ (x ⊙ exp(s(b ⊙ x)) + t(b ⊙ x)), log|det ∂y/∂x| = Σ (1 − b) ⊙ s.
    """

    mask: Tensor

    def __init__(self, mask: Tensor, width: int, hidden_layers: int) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float())
        self.net = mlp(dim, 2 * dim, width, hidden_layers, nn.SiLU)
        # A zero last layer makes s = t = 0: the layer starts as the identity.
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _shift_and_log_scale(self, x_fixed: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw_log_scale = self.net(x_fixed).chunk(2, dim=-1)
        log_scale = MAX_LOG_SCALE * torch.tanh(raw_log_scale / MAX_LOG_SCALE)
        free = 1 - self.mask
        return shift * free, log_scale * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return y and log|det ∂y/∂x| (shape (n,))."""
        x_fixed = x * self.mask
        shift, log_scale = self._shift_and_log_scale(x_fixed)
        y = x_fixed + (1 - self.mask) * (x * torch.exp(log_scale) + shift)
        return y, log_scale.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return x = forward⁻¹(y) and log|det ∂x/∂y| (shape (n,))."""
        y_fixed = y * self.mask
        shift, log_scale = self._shift_and_log_scale(y_fixed)
        x = y_fixed + (1 - self.mask) * (y - shift) * torch.exp(-log_scale)
        return x, -log_scale.sum(-1)


class CouplingFlow(GenerativeModel):
    """RealNVP (Dinh et al. 2017): x = f_K ∘ … ∘ f_1(z), z ~ N(0, I), affine couplings f_k.

    Consecutive layers use complementary masks (even/odd coordinates), so every coordinate is
    transformed; log q(x) = log N(f⁻¹(x)) + log|det ∂f⁻¹/∂x| is exact.
    """

    has_density = True

    def __init__(self, dim: int, depth: int = 6, width: int = 64, hidden_layers: int = 2) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(
                f"a coupling flow needs data of dimension ≥ 2 (got dim={dim}): a coupling layer "
                "conditions one part of the coordinates on the rest; use the gaussian model for "
                "1-D data"
            )
        for name, value in {"depth": depth, "width": width, "hidden_layers": hidden_layers}.items():
            if value < 1:
                raise ValueError(f"{name} must be ≥ 1, got {value}")
        self.dim = dim
        even = torch.arange(dim) % 2 == 0
        self.layers = nn.ModuleList(
            AffineCoupling(even if k % 2 == 0 else ~even, width, hidden_layers)
            for k in range(depth)
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base noise z to data space: return x = f(z) and log|det ∂f/∂z| (shape (n,))."""
        log_det = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, layer_log_det = layer(z)
            log_det = log_det + layer_log_det
        return z, log_det

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data x to base space: return z = f⁻¹(x) and log|det ∂f⁻¹/∂x| (shape (n,))."""
        log_det = x.new_zeros(x.shape[0])
        for layer in reversed(self.layers):
            assert isinstance(layer, AffineCoupling)
            x, layer_log_det = layer.inverse(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        like = next(self.parameters())
        return standard_normal(n, self.dim, generator, like=like)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self(self._noise(n, generator))[0]

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det

    def sample_with_log_prob(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        z = self._noise(n, generator)
        x, log_det = self(z)
        return x, standard_normal_log_prob(z) - log_det

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
