"""Multi-layer perceptrons: an implicit generator x = G(z) and a critic."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gandiv.models.base import LatentGenerator


class LeakyReLU02(nn.LeakyReLU):
    """Leaky ReLU with negative slope 0.2, the usual GAN critic choice (Radford et al. 2016)."""

    def __init__(self) -> None:
        super().__init__(negative_slope=0.2)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": LeakyReLU02,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be ≥ 1, got {value}")


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(
    in_features: int, out_features: int, width: int, depth: int, activation: type[nn.Module]
) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units, each with ``activation``, then a linear map."""
    layers: list[nn.Module] = []
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), activation()]
        features = width
    layers.append(nn.Linear(features, out_features))
    return nn.Sequential(*layers)


class MLPGenerator(LatentGenerator):
    """An implicit generator x = G(z), z ~ N(0, I) (Goodfellow et al. 2014): no density."""

    has_density = False

    def __init__(
        self,
        dim: int,
        latent_dim: int = 2,
        width: int = 128,
        depth: int = 3,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_positive(dim=dim, latent_dim=latent_dim, width=width, depth=depth)
        self.dim = dim
        self.latent_dim = latent_dim
        self.net = mlp(latent_dim, dim, width, depth, _activation(activation))

    def generate(self, z: Tensor) -> Tensor:
        """Map latents z of shape (n, latent_dim) to samples of shape (n, dim)."""
        return self.net(z)

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            "the mlp model is an implicit generator: it has no density (use a sample-based "
            "objective, or the gaussian/flow model for likelihood-based ones)"
        )


class MLPCritic(nn.Module):
    """A critic/discriminator T(x) returning one real number per sample (the pre-activation V(x)).

    With ``spectral_norm`` every linear layer is divided by its largest singular value, estimated by
    power iteration (Miyato et al. 2018).
    """

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        activation: str = "leaky_relu",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(dim=dim, width=width, depth=depth)
        self.dim = dim
        net = mlp(dim, 1, width, depth, _activation(activation))
        if spectral_norm:
            for i, layer in enumerate(net):
                if isinstance(layer, nn.Linear):
                    net[i] = _spectral_norm(layer)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Return the critic output, shape (n,), for x of shape (n, dim)."""
        return self.net(x).squeeze(-1).float()  # float32 losses under bf16 autocast
