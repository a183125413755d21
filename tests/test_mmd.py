"""objective=mmd: kernels on the data (vectors) or on fixed random convolutional features
(images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from gandiv import config as C
from gandiv.build import build_dataset, build_model, build_objective
from gandiv.data.images import ImageData
from gandiv.evaluation.distances import MMD_BANDWIDTH_SCALES, mmd2_unbiased
from gandiv.models.dcgan import DCGANFeatures, DCGANGenerator
from gandiv.objectives.mmd import MMD

from .celeba_copy import face

SIZE, WIDTH = 16, 8


def _config(*overrides: str) -> C.TrainConfig:
    with initialize_config_module("gandiv.conf", version_base="1.3"):
        return C.validate_train_config(compose("train", overrides=["objective=mmd", *overrides]))


def _image_objective(*overrides: str, model: DCGANGenerator | None = None) -> MMD:
    """objective=mmd as `gandiv train` builds it for 16×16 images (the copy is never read)."""
    cfg = _config(
        "dataset=celeba",
        "dataset.root=unread",
        f"dataset.size={SIZE}",
        "model=dcgan",
        f"objective.feature_width={WIDTH}",
        *overrides,
    )
    data = build_dataset(cfg.dataset)
    assert isinstance(data, ImageData)
    objective = build_objective(cfg.objective, data, cfg.critic, None, model=model)
    assert isinstance(objective, MMD)
    return objective


def _faces(n: int) -> torch.Tensor:
    """n face-like images (tests/celeba_copy.py) at 16×16, float (n, 3, 16, 16) in [−1, 1]."""
    pictures = np.stack([np.asarray(face(i).resize((SIZE, SIZE))) for i in range(n)])
    return torch.tensor(pictures).permute(0, 3, 1, 2).float() / 127.5 - 1


def _generator(seed: int = 0, channels_last: bool = False) -> DCGANGenerator:
    torch.manual_seed(seed)
    return DCGANGenerator(16, WIDTH, SIZE, channels_last=channels_last)


def _median_pairwise(points: torch.Tensor) -> float:
    """The median of ‖a_i − a_j‖ over i < j, by cdist and numpy (independently of the code)."""
    dist = torch.cdist(points.double(), points.double()).numpy()
    return float(np.median(dist[np.triu_indices(len(points), k=1)]))


def weights_of(objective: MMD) -> dict[str, torch.Tensor]:
    assert objective.features is not None
    return objective.features.state_dict()


def test_vector_mmd_is_the_plain_kernel_on_the_data_with_absolute_bandwidths():
    cfg = _config()  # dataset=gaussian: features=auto and bandwidth_scale=auto
    objective = build_objective(cfg.objective, build_dataset(cfg.dataset), cfg.critic, None)
    assert isinstance(objective, MMD) and objective.features is None and objective.scale is None
    assert objective.bandwidths == (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    assert objective.state_dict() == {}  # the checkpoints of vector runs are as before
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 0.5
    model = type("M", (), {})()
    loss = objective.sample_loss(model, y, x)  # type: ignore[arg-type]
    assert torch.equal(loss, mmd2_unbiased(x, y, objective.bandwidths))


def test_the_feature_map_is_frozen_and_a_function_of_feature_seed_alone():
    first = _image_objective()
    torch.manual_seed(12345)  # a run with another trainer.seed builds the same features
    second = _image_objective()
    other = _image_objective("objective.feature_seed=1")
    assert isinstance(first.features, DCGANFeatures)
    assert not any(p.requires_grad for p in first.features.parameters())
    assert not any(p.requires_grad for p in first.parameters())  # nothing for an optimiser
    assert set(first.state_dict()) == {"scale"} | {f"features.{k}" for k in weights_of(first)}
    for key, value in weights_of(first).items():
        assert torch.equal(value, weights_of(second)[key]), key
    images = _faces(8)
    assert not torch.allclose(first.features(images), other.features(images))
    # the pixels are the first block (φ is injective: the kernel is characteristic), then the
    # 8×8 and 4×4 layers, each divided by the square root of its size
    phi = first.features(images)
    assert first.features.dim == phi.shape[1] == 3 * 16 * 16 + WIDTH * 8 * 8 + 2 * WIDTH * 4 * 4
    torch.testing.assert_close(phi[:, : 3 * 16 * 16], images.flatten(1) / (3 * 16 * 16) ** 0.5)
    # BatchNorm-free: an image's features do not depend on the rest of its batch
    torch.testing.assert_close(first.features(images[:3]), first.features(images)[:3])
    # built from the seed without touching the global random stream
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    _image_objective()
    assert torch.equal(torch.rand(3), expected)


def test_the_median_scale_is_measured_once_on_the_first_data_batch():
    objective = _image_objective()
    assert objective.features is not None and objective.factors is not None
    model, images = _generator(), _faces(16)
    first, later = images[:8], images[8:]
    objective.model_loss(model, first, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _median_pairwise(objective.features(first))
    assert float(objective.scale) == pytest.approx(expected, rel=1e-6)
    objective.model_loss(model, later, torch.Generator().manual_seed(1))
    assert float(objective.scale) == pytest.approx(expected, rel=1e-6)  # kept, not re-measured
    # loaded from a checkpoint: used as it is, never measured again
    restored = _image_objective()
    restored.load_state_dict(objective.state_dict())
    restored.model_loss(model, later, torch.Generator().manual_seed(1))
    assert float(restored.scale) == float(objective.scale)
    # a checkpoint saved before the first batch holds no scale yet: the resumed run measures it
    unmeasured = _image_objective()
    unmeasured.load_state_dict(_image_objective().state_dict())
    unmeasured.model_loss(model, first, torch.Generator().manual_seed(0))
    assert float(unmeasured.scale) == pytest.approx(expected, rel=1e-6)
    assert objective.factors.tolist() == list(MMD_BANDWIDTH_SCALES)  # as eval's sample distances


def test_the_loss_is_the_unbiased_mmd_of_independently_computed_features():
    objective = _image_objective()
    model, batch = _generator(), _faces(8)
    loss = objective.model_loss(model, batch, torch.Generator().manual_seed(3))
    features = DCGANFeatures(WIDTH, SIZE, 3, seed=0)  # the default objective.feature_seed
    with torch.no_grad():
        samples = model.sample(8, torch.Generator().manual_seed(3))
        phi_x, phi_y = features(batch), features(samples)
    scale = _median_pairwise(phi_x)
    expected = mmd2_unbiased(phi_x, phi_y, [scale * f for f in MMD_BANDWIDTH_SCALES])
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()  # the gradient reaches the generator, through the frozen features
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert objective.features is not None
    assert all(p.grad is None for p in objective.features.parameters())


def test_features_data_and_absolute_bandwidths_compare_pixels():
    objective = _image_objective("objective.features=data", "objective.bandwidth_scale=absolute")
    assert objective.features is None and objective.scale is None
    model, batch = _generator(), _faces(8)
    loss = objective.model_loss(model, batch, torch.Generator().manual_seed(3))
    with torch.no_grad():
        samples = model.sample(8, torch.Generator().manual_seed(3))
    expected = mmd2_unbiased(batch.flatten(1), samples.flatten(1), objective.bandwidths)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_bf16_autocast_and_channels_last_give_the_same_loss_in_float32():
    batch = _faces(8)
    losses = {}
    for name, channels_last, autocast in [
        ("fp32", False, False),
        ("channels_last", True, False),
        ("bf16", False, True),
    ]:
        model = _generator(channels_last=channels_last)
        objective = _image_objective(model=model)
        assert objective.features is not None
        assert objective.features.channels_last == channels_last  # the generator's layout
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            losses[name] = objective.model_loss(model, batch, torch.Generator().manual_seed(3))
        assert losses[name].dtype == torch.float32
    torch.testing.assert_close(losses["channels_last"], losses["fp32"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(losses["bf16"], losses["fp32"])  # autocast did run the networks in bf16
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=0.05, atol=0.0)


def test_image_mmd_training_brings_the_model_closer_to_the_data():
    """A 16×16 DCGAN trained by image MMD for 150 steps on 32 faces: its MMD to them falls, on
    the objective's own features and on the pixels (a kernel it never saw)."""
    torch.manual_seed(0)
    data = _faces(32)
    model = _generator()
    objective = _image_objective()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    noise = torch.Generator().manual_seed(1)

    def distances() -> tuple[float, float]:
        with torch.no_grad():
            samples = model.sample(64, torch.Generator().manual_seed(5))
            features = float(objective.sample_loss(model, samples, data))
            pixels = [_median_pairwise(data.flatten(1)) * f for f in MMD_BANDWIDTH_SCALES]
            return features, float(mmd2_unbiased(data.flatten(1), samples.flatten(1), pixels))

    objective.model_loss(model, data, noise)  # the median scale, from all 32 faces
    before = distances()
    for _ in range(150):
        batch = data[torch.randint(len(data), (16,), generator=noise)]
        loss = objective.model_loss(model, batch, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = distances()
    assert after[0] < 0.2 * before[0], (before, after)
    assert after[1] < 0.5 * before[1], (before, after)


def test_on_vectors_the_median_scale_comes_from_the_first_training_batch_not_the_figures():
    """The figures evaluate `sample_loss` on their own fixed points before step 1: that must not
    fix the kernel the run trains with."""
    cfg = _config("objective.bandwidth_scale=median")
    data = build_dataset(cfg.dataset)
    objective = build_objective(cfg.objective, data, cfg.critic, None)
    assert isinstance(objective, MMD) and objective.features is None
    shown, batch = 3.0 * torch.randn(50, 2), torch.randn(40, 2)
    model = build_model(cfg.model, 2)
    objective.sample_loss(model, torch.randn(50, 2), shown)  # a figure's frame at step 0
    assert not objective.measured and torch.isnan(objective.scale).all()
    objective.model_loss(model, batch, torch.Generator().manual_seed(0))
    assert float(objective.scale) == pytest.approx(_median_pairwise(batch), rel=1e-6)


def test_mmd_keys_the_resolved_settings_do_not_read_are_reported(gandiv, tmp_path):
    result = gandiv(
        "train",
        "objective=mmd",
        "model=gaussian",
        "trainer.steps=2",
        "plot.every=0",
        "objective.median_factors=[1.0]",
        "objective.feature_seed=3",
        "objective.bandwidths=[0.5]",
        "critic.width=8",
    )
    assert result.code == 0, result.err
    log = next(tmp_path.glob("outputs/*/*/train.log")).read_text()
    assert "ignored: critic.width=8 (objective=mmd trains no critic)" in log
    assert (
        "ignored: objective.median_factors=[1.0] objective.feature_seed=3 (objective=mmd with "
        "features=data, bandwidth_scale=absolute here)" in log
    )
    assert "objective.bandwidths" not in log.split("ignored: objective.")[1].splitlines()[0]


class _LastBlock(nn.Module):
    """φ's last block alone (8w×2×2 here): fewer numbers than a 16×16 image, so not injective."""

    def __init__(self) -> None:
        super().__init__()
        self.full = DCGANFeatures(WIDTH, SIZE, 3, seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(len(x), 3, SIZE, SIZE)
        for block in self.full.blocks:
            h = block(h)
        return h.flatten(1)


def test_the_pixels_in_the_features_are_what_bring_the_model_close_in_pixels():
    """Why φ keeps the pixels: trained on the last block alone a generator matches that block
    and stays far off in pixels (measured 0.82–0.92 over three seeds, from 1.6), with φ it gets
    close (0.18–0.23)."""
    data = _faces(32)
    pixels = [_median_pairwise(data.flatten(1)) * f for f in MMD_BANDWIDTH_SCALES]
    after = {}
    for name, features in (("last", _LastBlock()), ("phi", DCGANFeatures(WIDTH, SIZE, 3, seed=0))):
        model, objective = _generator(), MMD(MMD_BANDWIDTH_SCALES, features, median_scale=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
        noise = torch.Generator().manual_seed(0)
        for _ in range(150):
            batch = data[torch.randint(len(data), (16,), generator=noise)]
            optimizer.zero_grad(set_to_none=True)
            objective.model_loss(model, batch, noise).backward()
            optimizer.step()
        with torch.no_grad():
            samples = model.sample(256, torch.Generator().manual_seed(99)).flatten(1)
        after[name] = float(mmd2_unbiased(data.flatten(1), samples, pixels))
    assert after["last"] > 0.5 and after["phi"] < 0.4 * after["last"], after


def _numpy_mmd_and_gradient(x: np.ndarray, y: np.ndarray, bandwidths: list[float]):
    """The unbiased MMD² and its gradient with respect to y, by double loops over the pairs."""
    n, m = len(x), len(y)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return sum(np.exp(-((a - b) ** 2).sum() / (2 * s * s)) for s in bandwidths)

    def dk_da(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sum(
            -(a - b) / (s * s) * np.exp(-((a - b) ** 2).sum() / (2 * s * s)) for s in bandwidths
        )

    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    grad = np.zeros_like(y)
    for i in range(m):
        # k(y_i, y_j) and k(y_j, y_i) both hold y_i: twice the one-sided derivative
        grad[i] += 2 * sum(dk_da(y[i], y[j]) for j in range(m) if j != i) / (m * (m - 1))
        grad[i] -= 2 * sum(dk_da(y[i], a) for a in x) / (n * m)
    return xx + yy - 2 * xy, grad


@pytest.mark.parametrize("as_tensor", [False, True])
def test_the_mmd_estimator_and_its_gradient_match_double_loops(as_tensor: bool) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64) * 1.5 + 0.5
    y[0] += 40.0  # far from everything: exponents far below the floor of −80 for small σ
    bandwidths = [0.3, 1.0, 3.0]
    expected, expected_grad = _numpy_mmd_and_gradient(x.numpy(), y.numpy(), bandwidths)
    y.requires_grad_(True)
    value = mmd2_unbiased(
        x, y, torch.tensor(bandwidths, dtype=x.dtype) if as_tensor else bandwidths
    )
    value.backward()
    assert float(value) == pytest.approx(expected, rel=1e-10)
    assert y.grad is not None
    np.testing.assert_allclose(y.grad.numpy(), expected_grad, rtol=1e-8, atol=1e-12)


def test_the_mmd_estimator_in_float32_matches_float64() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g) * 0.8 + 0.3
    bandwidths = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]  # objective=mmd's defaults on vectors
    single = float(mmd2_unbiased(x, y, bandwidths))
    double = float(mmd2_unbiased(x.double(), y.double(), bandwidths))
    assert single == pytest.approx(double, rel=1e-4)
