"""Tests of the generative models and critics against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian

from gandiv.models import (
    ACTIVATIONS,
    AffineCoupling,
    CouplingFlow,
    GaussianModel,
    GenerativeModel,
    MLPCritic,
    MLPGenerator,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numpy_gaussian_log_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) from the textbook formula."""
    d = mean.shape[0]
    diff = x - mean
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * maha - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)


def randomise_gaussian(model: GaussianModel, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.loc.copy_(torch.randn(model.loc.shape, generator=g))
        model.raw_scale_tril.copy_(torch.randn(model.raw_scale_tril.shape, generator=g))


def perturbed_flow(dim: int, seed: int = 0, scale: float = 0.3, depth: int = 4) -> CouplingFlow:
    """A float64 flow whose zero-initialised output layers are given random weights."""
    torch.manual_seed(seed)
    flow = CouplingFlow(dim, depth=depth, width=16).double()
    with torch.no_grad():
        for layer in flow.modules():
            if not isinstance(layer, AffineCoupling):
                continue
            last = layer.net[-1]
            assert isinstance(last, nn.Linear)
            last.weight.normal_(0.0, scale)
            last.bias.normal_(0.0, scale)
    return flow


def standard_normal_log_density(z: Tensor) -> Tensor:
    d = z.shape[-1]
    return torch.distributions.MultivariateNormal(
        torch.zeros(d, dtype=z.dtype), torch.eye(d, dtype=z.dtype)
    ).log_prob(z)


# --------------------------------------------------------------------------------------------------
# GaussianModel


def test_gaussian_initialisation() -> None:
    torch.manual_seed(0)
    model = GaussianModel(3, init_std=2.0, init_mean_std=0.1)
    assert isinstance(model, GenerativeModel)
    assert model.has_density and model.dim == 3
    torch.testing.assert_close(model.covariance, 4.0 * torch.eye(3))
    assert 0 < model.mean.abs().max() < 0.5
    torch.manual_seed(0)
    torch.testing.assert_close(GaussianModel(3).mean, model.mean)  # the global seed decides


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_gaussian_log_prob_matches_closed_form(dim: int) -> None:
    model = GaussianModel(dim).double()
    randomise_gaussian(model, seed=dim)
    x = torch.randn(50, dim, generator=gen(1), dtype=torch.float64) * 2
    mean = model.mean.detach().numpy()
    cov = model.covariance.detach().numpy()
    expected = numpy_gaussian_log_density(x.numpy(), mean, cov)
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), expected, rtol=1e-10)
    assert model.log_prob(x).shape == (50,)


@pytest.mark.parametrize("dim", [1, 3])
def test_gaussian_sample_moments(dim: int) -> None:
    model = GaussianModel(dim).double()
    randomise_gaussian(model, seed=10 + dim)
    n = 200_000
    with torch.no_grad():
        x = model.sample(n, gen(2)).numpy()
        mean = model.mean.numpy()
        cov = model.covariance.numpy()
    assert x.shape == (n, dim)
    mean_se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * mean_se)
    # Var of the sample covariance entry (i, j) of a Gaussian is (Σ_ii Σ_jj + Σ_ij²) / n.
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x, rowvar=False).reshape(dim, dim) - cov) < 4 * cov_se)


def test_gaussian_sample_is_reparameterised() -> None:
    model = GaussianModel(2).double()
    randomise_gaussian(model, seed=3)
    x = model.sample(64, gen(4))
    x.mean(0).sum().backward()
    assert model.loc.grad is not None
    torch.testing.assert_close(model.loc.grad, torch.ones(2, dtype=torch.float64))

    # d sample / d (loc, raw Cholesky parameter) against finite differences with the same noise.
    raw = model.raw_scale_tril.detach().clone().requires_grad_(True)
    loc = model.loc.detach().clone().requires_grad_(True)

    class Sampler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self) -> Tensor:
            return self.model.sample(8, gen(5))  # the same noise on every call

    sampler = Sampler()

    def sample_from(loc: Tensor, raw: Tensor) -> Tensor:
        params = {"model.loc": loc, "model.raw_scale_tril": raw}
        return torch.func.functional_call(sampler, params, (), strict=True)

    assert torch.autograd.gradcheck(sample_from, (loc, raw))
    raw.grad = None
    sample_from(loc, raw).pow(2).sum().backward()
    assert raw.grad is not None
    rows, cols = torch.tril_indices(2, 2)
    assert torch.all(raw.grad[rows, cols] != 0)  # every lower-triangular entry is used
    assert torch.all(torch.triu(raw.grad, diagonal=1) == 0)  # the upper triangle is not


def test_gaussian_sample_with_log_prob() -> None:
    model = GaussianModel(3).double()
    randomise_gaussian(model, seed=6)
    x, log_q = model.sample_with_log_prob(20, gen(7))
    torch.testing.assert_close(x, model.sample(20, gen(7)))
    torch.testing.assert_close(log_q, model.log_prob(x))
    assert log_q.requires_grad


def test_gaussian_same_seed_same_samples() -> None:
    model = GaussianModel(2)
    torch.testing.assert_close(model.sample(10, gen(8)), model.sample(10, gen(8)))
    assert not torch.allclose(model.sample(10, gen(8)), model.sample(10, gen(9)))


def test_gaussian_covariance_positive_definite_for_any_raw_parameter() -> None:
    model = GaussianModel(4).double()
    for seed in range(5):
        g = gen(seed)
        with torch.no_grad():
            model.raw_scale_tril.copy_(10 * torch.randn(4, 4, generator=g, dtype=torch.float64))
            model.raw_scale_tril.diagonal().copy_(torch.tensor([-50.0, -5.0, 0.0, 5.0]))
        cov = model.covariance.detach()
        torch.testing.assert_close(cov, cov.T)
        assert torch.all(torch.diagonal(model.scale_tril) > 0)
        assert torch.all(torch.linalg.eigvalsh(cov) > 0)
        assert torch.isfinite(model.log_prob(torch.zeros(3, 4, dtype=torch.float64))).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"dim": 0}, "dim"), ({"dim": 2, "init_std": 0.0}, "init_std")],
)
def test_gaussian_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianModel(**kwargs)  # type: ignore[arg-type]


def test_gaussian_maximum_likelihood_recovers_sample_moments() -> None:
    true_cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    true_mean = torch.tensor([1.5, -0.5])
    noise = torch.randn(2000, 2, generator=gen(0))
    data = true_mean + noise @ torch.linalg.cholesky(true_cov).T
    data_mean = data.mean(0)
    data_cov = (data - data_mean).T @ (data - data_mean) / data.shape[0]  # the MLE divides by n

    torch.manual_seed(0)
    model = GaussianModel(2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(400):
        optimiser.zero_grad()
        loss = -model.log_prob(data).mean()
        loss.backward()
        optimiser.step()
    torch.testing.assert_close(model.mean.detach(), data_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(model.covariance.detach(), data_cov, atol=0.02, rtol=0)


# --------------------------------------------------------------------------------------------------
# CouplingFlow


def test_flow_starts_at_identity() -> None:
    flow = CouplingFlow(2)
    z = torch.randn(16, 2, generator=gen(0))
    x, log_det = flow(z)
    torch.testing.assert_close(x, z)
    torch.testing.assert_close(log_det, torch.zeros(16))
    torch.testing.assert_close(flow.log_prob(z), standard_normal_log_density(z))


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_flow_inverse_undoes_forward(dim: int) -> None:
    flow = perturbed_flow(dim, seed=dim)
    z = torch.randn(100, dim, generator=gen(1), dtype=torch.float64)
    x, log_det = flow(z)
    assert (x - z).abs().max() > 0.1  # the perturbed flow is far from the identity
    z_back, inverse_log_det = flow.inverse(x)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_flow_log_prob_matches_change_of_variables(dim: int) -> None:
    flow = perturbed_flow(dim, seed=20 + dim)
    zs = torch.randn(4, dim, generator=gen(2), dtype=torch.float64)
    for z in zs:
        jac = jacobian(lambda v: flow(v.unsqueeze(0))[0].squeeze(0), z)
        _, log_abs_det = torch.linalg.slogdet(jac)
        assert abs(log_abs_det) > 1e-2  # the map is not volume preserving
        x = flow(z.unsqueeze(0))[0]
        expected = standard_normal_log_density(z) - log_abs_det
        torch.testing.assert_close(flow.log_prob(x).squeeze(0), expected)


def test_flow_density_integrates_to_one() -> None:
    flow = perturbed_flow(2, seed=0)
    t = torch.linspace(-8, 8, 401, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(t, t, indexing="ij")
    points = torch.stack([grid_x.ravel(), grid_y.ravel()], dim=-1)
    with torch.no_grad():
        density = flow.log_prob(points).exp().reshape(401, 401)
        # the same integral without the log-det term: shows the term matters for this flow
        z, _ = flow.inverse(points)
        no_jacobian = standard_normal_log_density(z).exp().reshape(401, 401)
    mass = torch.trapezoid(torch.trapezoid(density, t, dim=1), t).item()
    assert mass == pytest.approx(1.0, abs=1e-3)
    wrong_mass = torch.trapezoid(torch.trapezoid(no_jacobian, t, dim=1), t).item()
    assert abs(wrong_mass - 1.0) > 0.05


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_flow_sample_with_log_prob(dim: int) -> None:
    flow = perturbed_flow(dim, seed=30 + dim)
    x, log_q = flow.sample_with_log_prob(64, gen(3))
    assert x.shape == (64, dim) and log_q.shape == (64,)
    torch.testing.assert_close(x, flow.sample(64, gen(3)))
    torch.testing.assert_close(log_q, flow.log_prob(x))
    # reparameterised: the samples and log q carry gradients to the coupling networks
    (x.sum() + log_q.sum()).backward()
    first = next(m for m in flow.modules() if isinstance(m, nn.Linear))
    assert isinstance(first, nn.Linear)
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_flow_same_seed_same_samples() -> None:
    flow = perturbed_flow(2)
    torch.testing.assert_close(flow.sample(10, gen(8)), flow.sample(10, gen(8)))


def test_flow_rejects_one_dimensional_data() -> None:
    with pytest.raises(ValueError, match=r"dimension ≥ 2.*use the gaussian model for 1-D data"):
        CouplingFlow(1)


# --------------------------------------------------------------------------------------------------
# MLPGenerator


def test_mlp_generator_shapes_and_determinism() -> None:
    model = MLPGenerator(dim=3, latent_dim=5, width=16, depth=2)
    assert isinstance(model, GenerativeModel)
    assert model.dim == 3 and model.latent_dim == 5
    assert model.net[0].in_features == 5
    x = model.sample(7, gen(1))
    assert x.shape == (7, 3)
    torch.testing.assert_close(x, model.sample(7, gen(1)))
    assert not torch.allclose(x, model.sample(7, gen(2)))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 + 1  # depth hidden layers and the output layer


def test_mlp_generator_generate_matches_sample() -> None:
    model = MLPGenerator(dim=2, latent_dim=4, width=16)
    z = torch.randn(6, 4, generator=gen(3))  # what sample draws from the same generator
    torch.testing.assert_close(model.generate(z), model.sample(6, gen(3)))
    torch.testing.assert_close(model(z), model.generate(z))


def test_mlp_generator_has_no_density() -> None:
    model = MLPGenerator(dim=2)
    assert not model.has_density
    with pytest.raises(NotImplementedError, match="implicit generator: it has no density"):
        model.log_prob(torch.zeros(3, 2))
    with pytest.raises(NotImplementedError):
        model.sample_with_log_prob(3, gen())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"activation": "gelu"}, "leaky_relu"),
    ],
)
def test_mlp_generator_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MLPGenerator(dim=2, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# MLPCritic


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_critic_each_activation(activation: str) -> None:
    critic = MLPCritic(dim=3, width=8, depth=2, activation=activation)
    assert critic(torch.randn(5, 3)).shape == (5,)
    assert any(isinstance(m, ACTIVATIONS[activation]) for m in critic.modules())


def test_leaky_relu_slope() -> None:
    out = ACTIVATIONS["leaky_relu"]()(torch.tensor([-1.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([-0.2, 2.0]))


def largest_singular_values(critic: MLPCritic) -> list[float]:
    linears = [m for m in critic.modules() if isinstance(m, nn.Linear)]
    return [torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() for m in linears]


def test_mlp_critic_spectral_norm() -> None:
    torch.manual_seed(0)
    critic = MLPCritic(dim=2, width=32, depth=3, spectral_norm=True)
    critic.train()
    x = torch.randn(16, 2, generator=gen(0))
    for _ in range(10):
        critic(x)
    sigmas = largest_singular_values(critic)
    assert len(sigmas) == 4
    assert sigmas == pytest.approx([1.0] * 4, abs=1e-2)

    torch.manual_seed(0)
    plain = MLPCritic(dim=2, width=32, depth=3)
    assert max(abs(s - 1.0) for s in largest_singular_values(plain)) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"width": 0}, "width"), ({"depth": 0}, "depth"), ({"activation": "swish"}, "relu")],
)
def test_mlp_critic_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MLPCritic(dim=2, **kwargs)  # type: ignore[arg-type]
