"""Spread KL: maximum likelihood for deterministic generators, on noisy data (Zhang et al. 2018).

A generator x = G(z) with latent_dim below the data's dimension has no density, so KL(P‖Q) is
undefined. Adding the same noise ε ~ K to data and model gives p̃ = p * K and
q̃(y) = ∫ K(y − G(z)) p(z) dz, and KL(P̃‖Q̃) = −E_p̃ log q̃(y) − H(P̃) is defined, and zero only when
P = Q (Barber's "Training models that have zero likelihood"). Its likelihood term is a latent
variable model with output noise K, trained here like a VAE (Kingma & Welling 2014) with an
amortised Gaussian encoder q(z|y) learned jointly with G (an MLP with a full covariance on
vectors, a convolutional network with a diagonal one on images):

    log q̃(y) ≥ E_{q(z|y)}[log K(y − G(z)) + log p(z)] + H[q(z|y)]      (the ELBO)

with y = x + ε drawn afresh (`samples` draws per data point) at every step. For evaluation the
importance-weighted bound (Burda et al. 2016) log (1/S) Σ_s K(y − G(z_s)) p(z_s) / q(z_s|y) is
tighter and tends to log q̃(y) as S grows.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gandiv.data.spread import SpreadKernel, SpreadNoise
from gandiv.divergences import DIVERGENCES
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.models.dcgan import DCGANCritic, dcgan_init
from gandiv.models.mlp import mlp
from gandiv.objectives.base import Objective

# A floor on the encoder's Cholesky diagonal (its posterior std shrinks with σ).
MIN_SCALE = 1e-5
# The noise y = x + ε of the spread objective on vectors is drawn in float64 (then cast): its fits,
# in the README and the tests, were measured with these draws; on toy batches they cost
# microseconds. Images draw it in their own dtype.
DRAW_DTYPE = torch.float64
# The MLP encoder's width on vectors (objective.encoder_width=null; on images the convolutional
# encoder is as wide as the generator).
MLP_ENCODER_WIDTH = 128
# Most elements of y − G(z) for all importance samples of one chunk of held-out points.
_BOUND_ELEMENTS = 1 << 24


class GaussianEncoder(nn.Module):
    """q(z|y) = N(μ(y), L(y) L(y)ᵀ) with a full lower-triangular L (softplus diagonal).

    The outputs are a linear map of y plus an MLP of y: the linear part alone holds the exact
    posterior of a linear generator with Gaussian noise, and starts training near it.
    """

    def __init__(self, dim: int, latent_dim: int, width: int, depth: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        outputs = latent_dim + latent_dim * (latent_dim + 1) // 2
        self.linear = nn.Linear(dim, outputs)
        self.net = mlp(dim, outputs, width, depth, nn.ReLU)
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, L): shapes (n, latent_dim) and (n, latent_dim, latent_dim)."""
        out = self.linear(y) + self.net(y)
        k = self.latent_dim
        mean, raw = out[:, :k], out[:, k:]
        scale = raw.new_zeros(len(y), k, k)
        scale[:, self.rows, self.cols] = raw
        diagonal = F.softplus(torch.diagonal(scale, dim1=1, dim2=2)) + MIN_SCALE
        return mean, torch.tril(scale, -1) + torch.diag_embed(diagonal)


class ConvEncoder(nn.Module):
    """q(z|y) = N(μ(y), diag s(y)²) for images y of shape `image_shape`: the DCGAN critic's
    convolutions without BatchNorm (each image's posterior depends on that image alone), then a
    4×4 convolution to the 2·latent_dim outputs (μ, and s through a softplus).

    A full covariance would need latent_dim(latent_dim + 1)/2 outputs (5,050 for the DCGAN's 100).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        channels, size, _ = image_shape
        critic = DCGANCritic(width, size, channels, batch_norm=False)
        self.image_shape = image_shape
        self.channels_last = channels_last
        self.trunk = critic.hidden()
        out = critic.net[-1]
        assert isinstance(out, nn.Conv2d)
        self.head = nn.Conv2d(out.in_channels, 2 * latent_dim, 4, 1, 0)
        dcgan_init(self.head)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, s): both (n, latent_dim), at least float32 (also under bf16 autocast)."""
        y = y.reshape(len(y), *self.image_shape)
        if self.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        out = self.head(self.trunk(y)).reshape(len(y), -1)
        mean, raw = out.to(torch.promote_types(out.dtype, torch.float32)).chunk(2, dim=1)
        return mean, F.softplus(raw) + MIN_SCALE


Encoder = GaussianEncoder | ConvEncoder


def _latents(encoder: Encoder, y: Tensor, draws: int, generator: torch.Generator):
    """z = μ + L η for `draws` η per y: z (draws, n, k), log q(z|y) (draws, n), log det L (n,).
    L is the encoder's Cholesky factor (n, k, k), or its diagonal (n, k)."""
    mean, scale = encoder(y)
    eta = torch.randn(
        (draws, *mean.shape), generator=generator, device=generator.device, dtype=mean.dtype
    ).to(mean.device)
    if scale.dim() == mean.dim():  # a diagonal covariance
        z = mean + scale * eta
        log_det = scale.log().sum(-1)
    else:
        z = mean + torch.einsum("nij,snj->sni", scale, eta)
        log_det = torch.diagonal(scale, dim1=1, dim2=2).log().sum(-1)
    log_q = -0.5 * eta.square().sum(-1) - 0.5 * mean.shape[1] * math.log(2 * math.pi) - log_det
    return z, log_q, log_det


def elbo(
    model: LatentGenerator,
    encoder: Encoder,
    kernel: SpreadKernel,
    y: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """E_q[log K(y − G(z)) + log p(z)] + H[q(z|y)] per noisy point y (vectors or images), one
    reparameterised z each (the entropy of the Gaussian q in closed form)."""
    z, _, log_det = _latents(encoder, y, 1, generator)
    z = z[0]
    entropy = log_det + 0.5 * z.shape[1] * (1 + math.log(2 * math.pi))
    offsets = y.flatten(1) - model.generate(z).flatten(1)
    return kernel.log_prob(offsets) + model.latent_log_prob(z) + entropy


def importance_bound(
    model: LatentGenerator,
    encoder: Encoder,
    kernel: SpreadKernel,
    y: Tensor,
    draws: int,
    generator: torch.Generator,
) -> Tensor:
    """log (1/S) Σ_s K(y − G(z_s)) p(z_s) / q(z_s|y), z_s ~ q(z|y), per point y (S = draws)."""
    z, log_q, _ = _latents(encoder, y, draws, generator)
    flat = z.reshape(-1, z.shape[-1])
    x = model.generate(flat).reshape(draws, len(y), -1)
    log_w = kernel.log_prob(y.flatten(1) - x)
    log_w = log_w + model.latent_log_prob(flat).reshape(draws, -1) - log_q
    return torch.logsumexp(log_w, 0) - math.log(draws)


class SpreadKL(Objective):
    """Minimise KL(P̃‖Q̃) between the spread data and the spread generator through the ELBO.

    The loss is −ELBO per noisy point (nats), an upper bound on −E_p̃ log q̃ = KL(P̃‖Q̃) + H(P̃).
    The encoder is trained with the generator by the model's optimiser: a `GaussianEncoder`
    (`encoder_width`, `encoder_depth`) on vectors, a `ConvEncoder` (`encoder_width` feature maps
    in its first layer) on images of shape `image_shape`.
    """

    name = "spread"
    needs_generator: ClassVar[bool] = True
    divergence = DIVERGENCES["kl"]  # between the spread distributions
    spread: SpreadNoise

    def __init__(
        self,
        noise: SpreadNoise,
        dim: int,
        latent_dim: int,
        samples: int = 1,
        encoder_width: int = MLP_ENCODER_WIDTH,
        encoder_depth: int = 2,
        iw_samples: int = 64,
        image_shape: tuple[int, int, int] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be ≥ 1, got {samples}, {iw_samples}")
        self.spread = noise
        self.samples = samples
        self.iw_samples = iw_samples
        self.dim = dim
        self.encoder: Encoder
        if image_shape is None:
            self.encoder = GaussianEncoder(dim, latent_dim, encoder_width, encoder_depth)
            self.draw_dtype: torch.dtype | None = DRAW_DTYPE
        else:
            self.encoder = ConvEncoder(image_shape, latent_dim, encoder_width, channels_last)
            self.draw_dtype = None

    @property
    def kernel(self) -> SpreadKernel:
        """The spread kernel at the current step (σ annealed on its schedule)."""
        return self.spread.kernel_at(self.step)

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def noisy(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """`samples` noisy copies y = x + ε of each data point."""
        return self.kernel.add_noise(batch, generator, self.samples, self.draw_dtype)

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        assert isinstance(model, LatentGenerator)
        y = self.noisy(batch, generator)
        return -elbo(model, self.encoder, self.kernel, y, generator).mean()

    def reconstructions(
        self, model: LatentGenerator, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Noisy copies y = x + ε of x, and G(μ(y)): the generator at the encoder's mean."""
        with torch.no_grad():
            y = self.kernel.add_noise(x, generator, dtype=self.draw_dtype)
            return y, model.generate(self.encoder(y)[0])

    def heldout_bound(self, model: LatentGenerator, x: Tensor, generator: torch.Generator) -> float:
        """−mean importance-weighted bound on log q̃(y) over noisy held-out points y = x + ε:
        an upper bound on their negative log-likelihood under Q̃, in nats per point (image)."""
        total = 0.0
        chunk = min(1024, max(1, _BOUND_ELEMENTS // (self.iw_samples * self.dim)))
        # the samples of one point are split too where they alone exceed the budget
        draws = max(1, _BOUND_ELEMENTS // (chunk * self.dim))
        counts = [min(draws, self.iw_samples - i) for i in range(0, self.iw_samples, draws)]
        with torch.no_grad():
            for part in x.split(chunk):
                y = self.kernel.add_noise(part, generator, dtype=self.draw_dtype)
                # log mean_s w_s over all samples from each split's log mean: + log(count) − log S
                sums = [
                    importance_bound(model, self.encoder, self.kernel, y, n, generator)
                    + math.log(n)
                    for n in counts
                ]
                bound = torch.logsumexp(torch.stack(sums), 0) - math.log(self.iw_samples)
                total += float(bound.double().sum())
        return -total / len(x)
