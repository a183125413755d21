"""Which metrics a finished run gets, and in what order: the report behind `gandiv eval`'s
eval.json (the README's "Evaluation"), as a function of the run's objects.

Vector data: the held-out likelihood (a model with a density) or the spread objective's bound on
it; the ground truth by quadrature (a model with a density), by kernel-density estimates (an
implicit model on 1-D/2-D data with a density) or none; the spread distributions' ground truth;
the independent critics; modes (mixtures); sample distances. Images: the independent critics, the
spread bound and sample grids, as figures for the caller to save; images have no density, hence
no likelihood or ground truth.

Nothing here reads a config or a run directory: `gandiv.commands.evaluate` restores the run and
passes its parts. The objective's part comes as values (its divergence row, its spread noise),
the spread objective as a `SpreadBound` and the critics as a `CriticEstimates` the command sets
up, so evaluation needs nothing from the objectives above it. The draws follow one order (model
samples, bound, critics, distances from one generator), which is what makes two evaluations of a
run with one seed agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from matplotlib.figure import Figure
from torch import Tensor

from gandiv.data.images import ImageData, to_uint8_images
from gandiv.data.spread import SpreadKernel, SpreadNoise
from gandiv.data.toy import Mixture, ToyData
from gandiv.divergences import FDivergence, get_divergence
from gandiv.evaluation.distances import sample_distances
from gandiv.evaluation.ground_truth import ground_truth_metrics
from gandiv.evaluation.ideal import GaussianFit, IdealSearch, compare, nearest_divergence
from gandiv.evaluation.kde import kde_ground_truth
from gandiv.evaluation.modes import mode_metrics
from gandiv.evaluation.spread import has_spread_metrics, spread_metrics
from gandiv.models import GaussianModel
from gandiv.models.base import GenerativeModel, LatentGenerator
from gandiv.plotting.images import image_grid_figure

log = logging.getLogger("gandiv")

# Offset of the evaluation noise stream from the training seed (evaluation never draws from the
# training generator, so changing the evaluation cadence never changes training).
EVAL_SEED_OFFSET = 1_000_003
# Test images in a spread run's figures/eval_reconstructions.png (one row each: x, y, G(μ(y))).
RECONSTRUCTED = 8
# Model samples drawn at a time on image runs (bounds the generator's activation memory).
IMAGE_CHUNK = 256

# The independent critics' estimates: (held-out data, sample_model(n, generator), generator) →
# eval.json's ``independent_critic`` (`gandiv.evaluation.critic.independent_critics`).
CriticEstimates = Callable[
    [Tensor, Callable[[int, torch.Generator], Tensor], torch.Generator], dict[str, Any]
]


# The ideal search of a divergence row on the run's data (the caller caches them: a sweep's jobs,
# and an evaluation's nearest divergence, share one search per row).
SearchFor = Callable[[FDivergence], IdealSearch]


class SpreadBound(Protocol):
    """The spread objective (`gandiv.objectives.spread.SpreadKL`) as evaluation uses it."""

    iw_samples: int  # importance samples per held-out point

    @property
    def kernel(self) -> SpreadKernel: ...

    def heldout_bound(self, model: LatentGenerator, x: Tensor, generator: torch.Generator) -> float:
        """−mean importance-weighted bound on log q̃ over noisy copies of `x` (nats per point)."""
        ...

    def reconstructions(
        self, model: LatentGenerator, x: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Noisy copies y of `x`, and G(μ(y))."""
        ...


def sample_in_chunks(
    model: GenerativeModel, n: int, generator: torch.Generator, chunk: int = IMAGE_CHUNK
) -> torch.Tensor:
    """`n` model samples drawn `chunk` at a time, without gradients."""
    with torch.no_grad():
        return torch.cat([model.sample(min(chunk, n - i), generator) for i in range(0, n, chunk)])


def eval_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The noise of the ground-truth metrics at `step` (apart from the training noise)."""
    return torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET * (step + 1))


def spread_bound(
    bound: SpreadBound | None, model: GenerativeModel, test: Tensor, generator: torch.Generator
) -> dict[str, Any]:
    """A spread run's held-out NLL bound (nats per point) and what it is; nothing for others."""
    if bound is None or not isinstance(model, LatentGenerator):
        return {}
    return {
        "heldout_nll": bound.heldout_bound(model, test, generator),
        "heldout_nll_reason": (
            f"an upper bound: −(importance-weighted bound, {bound.iw_samples} samples) on "
            f"log q̃ of {len(test)} held-out points with spread noise σ={bound.kernel.sigma:g}"
        ),
    }


def vector_report(
    data: ToyData,
    model: GenerativeModel,
    test: Tensor,
    *,
    step: int,
    seed: int,
    generator: torch.Generator,
    kde_noise: torch.Generator,
    row: FDivergence | None,
    spread: SpreadNoise | None,
    spread_kernel: SpreadKernel | None,
    bound: SpreadBound | None,
    critics: CriticEstimates,
    ideals: Callable[[], dict[str, Any]],
    num_samples: int,
    grid_points: int | None,
    pis: list[float],
    kde_bandwidth: float | None,
    model_name: str,
    run_name: str,
) -> dict[str, Any]:
    """The report of a run on vector data, on its held-out points `test`.

    `step`, `seed`: the checkpoint's step and the run's training seed (the ground truth's noise,
    `eval_generator`). `generator`: the model samples, the spread bound, the critics and the
    sample distances draw from it in that order; `kde_noise`: the kernel-density estimate's own
    stream. `row`: the objective's divergence (``objective_divergence``); `spread`,
    `spread_kernel`: its spread noise, and its kernel at the checkpoint's step; `bound`: the
    spread objective, for its held-out bound. `ideals()`: ``ideal`` and ``nearest_divergence``
    for a model with a density. `num_samples` … `kde_bandwidth`: ``eval.*``. `model_name`,
    `run_name`: for the messages.
    """
    device = test.device
    with torch.no_grad():
        samples = model.sample(num_samples, generator)
    report: dict[str, Any] = {"step": step, "n_test": len(test)}

    # held-out likelihood and ground truth ------------------------------------------------------
    extra: Mapping[str, FDivergence] | None = {"objective_divergence": row} if row else None
    if model.has_density:
        with torch.no_grad():
            report["heldout_nll"] = float(-model.log_prob(test).mean())
        noise = eval_generator(seed, step, device)
        truth: dict[str, Any] = ground_truth_metrics(data, model, noise, grid_points, pis, extra)
        report["ground_truth"] = {
            **truth,
            "method": "quadrature" if data.dim <= 2 else "monte_carlo",
        }
        report.update(ideals())
    else:
        report["heldout_nll"] = None
        report["heldout_nll_reason"] = (
            f"model={model_name} is an implicit generator: it has no density"
        )
        report.update(spread_bound(bound, model, test, generator))
        if not data.has_density:
            report["ground_truth"] = None
            report["ground_truth_reason"] = "the data have no density (a curve of zero width)"
        elif data.dim <= 2:
            truth = kde_ground_truth(
                data, samples, grid_points, pis, kde_bandwidth, extra, kde_noise
            )
            report["ground_truth"] = truth
            if not truth["reliable"]:
                log.warning("no kernel-density ground truth for %s: %s", run_name, truth["reason"])
        else:
            report["ground_truth"] = None
            report["ground_truth_reason"] = "kernel-density estimates are made in 1-D/2-D only"
    if has_spread_metrics(data, model, spread):
        noise = eval_generator(seed, step, device)
        report["spread_ground_truth"] = spread_metrics(
            data, model, spread_kernel, noise, grid_points, pis, extra
        )

    # independent critics ---------------------------------------------------------------------
    def sample_model(n: int, noise: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            return model.sample(n, noise)

    report["independent_critic"] = critics(test, sample_model, generator)

    # modes and sample distances -----------------------------------------------------------------
    if isinstance(data, Mixture):
        report["modes"] = mode_metrics(samples, data)
    report["sample_distances"] = sample_distances(test, samples, generator)
    return report


def image_report(
    data: ImageData,
    model: GenerativeModel,
    test: Tensor,
    *,
    step: int,
    generator: torch.Generator,
    bound: SpreadBound | None,
    critics: CriticEstimates,
    critic_architecture: dict[str, Any],
    nll_images: int,
    grid: int,
    model_name: str,
    title: str,
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """The report of an image run on its test images `test`, and its figures: ``eval_samples``
    and ``test_images`` (`grid` images each), and ``eval_reconstructions`` for a spread run.

    `generator`: the spread bound (on the first `nll_images` test images), the critics and the
    sample grid draw from it in that order. `critic_architecture`: the independent critic's
    settings, as reported. `title`: the figures' (the run and its step).
    """
    report: dict[str, Any] = {
        "step": step,
        "n_test": len(test),
        "heldout_nll": None,
        "heldout_nll_reason": f"model={model_name} is an implicit generator: it has no density",
        "ground_truth": None,
        "ground_truth_reason": f"no density is known for images (dataset={data.name})",
        **spread_bound(bound, model, test[:nll_images], generator),
        "independent_critic_architecture": critic_architecture,
    }
    report["independent_critic"] = critics(
        test, lambda n, noise: sample_in_chunks(model, n, noise), generator
    )
    report["sample_distances"] = None
    report["sample_distances_reason"] = "pixel-space sample distances are not computed for images"
    shown = sample_in_chunks(model, grid, generator)
    real = to_uint8_images(test[:grid])
    grids = {
        "eval_samples": image_grid_figure(to_uint8_images(shown), 8, f"model samples · {title}"),
        "test_images": image_grid_figure(real, 8, f"test partition · {data.name}"),
    }
    if bound is not None and isinstance(model, LatentGenerator):
        shown = test[:RECONSTRUCTED]
        noisy, rebuilt = bound.reconstructions(model, shown, generator)
        rows = to_uint8_images(torch.cat([shown, noisy, rebuilt]))
        grids["eval_reconstructions"] = image_grid_figure(
            rows,
            len(shown),
            f"rows: test images · with spread noise σ={bound.kernel.sigma:g} · G(mean of q(z|y))",
        )
    return report, grids


def ideal_block(found: IdealSearch | str, model: GenerativeModel) -> dict[str, Any]:
    """summary.json's and eval.json's ``ideal``: the fit against its target's ideal (`compare`),
    or the reason there is none (`found` is then that reason)."""
    if isinstance(found, str):
        return {"divergence": None, "reason": found}
    assert isinstance(model, GaussianModel)
    fit = GaussianFit.of(model.mean.detach().cpu(), model.covariance.detach().cpu())
    block = compare(found, fit)
    gap = "inf" if block["gap"] is None else f"{block['gap']:.4g}"
    log.info(
        "ideal %s fit: %.6g (%d local optima); this fit: gap %s nats, 2-Wasserstein distance %.3g",
        block["divergence"],
        block["value"],
        len(block["local_optima"]),
        gap,
        block["distance"],
    )
    return block


def ideals_report(
    found: IdealSearch | str,
    model: GenerativeModel,
    data: ToyData,
    nearest: Sequence[str],
    pis: Sequence[float],
    search_for: SearchFor,
) -> dict[str, Any]:
    """eval.json's ``ideal`` (the fit against its target's ideal, or why there is none: `found`)
    and ``nearest_divergence`` (the fit against the ideal of each divergence named in `nearest`,
    js_pi at each of `pis`), or why there are none."""
    out: dict[str, Any] = {"ideal": ideal_block(found, model)}
    if not isinstance(model, GaussianModel) or not data.has_density or data.dim > 2:
        out["nearest_divergence"] = None
        out["nearest_divergence_reason"] = (
            "ideals are computed for model=gaussian on 1-D/2-D data with a density"
        )
        return out
    if not nearest:
        return out
    searches = {}
    for name in nearest:
        for pi in pis if name == "js_pi" else [None]:
            row = get_divergence(name, pi)
            searches[row.name] = search_for(row)
    fit = GaussianFit.of(model.mean.detach().cpu(), model.covariance.detach().cpu())
    answer = nearest_divergence(searches, fit)
    out["nearest_divergence"] = answer
    ranking, rows, alike = answer["ranking"], answer["divergences"], answer["indistinguishable"]
    log.info(
        "nearest divergence: %s, %.3g from its ideal%s; next: %s",
        ranking[0],
        rows[ranking[0]]["distance"],
        f" (its ideal and that of {', '.join(alike)} lie closer together than the fit: "
        "these data cannot tell them apart)"
        if alike
        else "",
        ", ".join(f"{n} {rows[n]['distance']:.3g}" for n in ranking[1:4] if n not in alike),
    )
    return out
