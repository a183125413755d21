"""Objectives computed from densities: maximum likelihood, reverse KL, and direct f-divergences."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gandiv.data.toy import ToyData
from gandiv.divergences import DIVERGENCES, FDivergence, pinned
from gandiv.evaluation.ground_truth import MAX_DOUBLINGS, DataGrid, covering_box, doubled_box
from gandiv.evaluation.ideal import GaussianFit, IdealSearch, Landscape
from gandiv.evaluation.quadrature import f_divergence, integrate, monte_carlo_f_divergence
from gandiv.models.base import GenerativeModel
from gandiv.models.gaussian import GaussianModel
from gandiv.objectives.base import Objective


class ForwardKL(Objective):
    """Maximum likelihood: minimise KL(P‖Q) = −E_p[log q(x)] − H(P) (Raffel, eqn. 6)."""

    name = "forward_kl"
    needs_model_density = True
    divergence = DIVERGENCES["kl"]

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        return -model.log_prob(batch).mean()


class ReverseKL(Objective):
    """KL(Q‖P) = E_q[log q(x) − log p(x)] with the known data density (Raffel, eqn. 11).

    Estimated with reparameterised model samples, so the gradient is pathwise.
    """

    name = "reverse_kl"
    needs_model_density = True
    needs_data_density = True
    divergence = DIVERGENCES["reverse_kl"]

    def __init__(self, data: ToyData) -> None:
        super().__init__()
        self.data = data

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        x, log_q = model.sample_with_log_prob(len(batch), generator)
        return (log_q - self.data.log_prob(x)).mean()

    def sample_loss(self, model: GenerativeModel, samples: Tensor, batch: Tensor) -> Tensor:
        return (model.log_prob(samples) - self.data.log_prob(samples)).mean()


class Direct(Objective):
    """Any f-divergence D_f(P‖Q) = ∫ q f(p/q) computed from both densities and minimised.

    A Gaussian model in 1-D/2-D: the ideal's quadrature (`gandiv.evaluation.ideal.Landscape`,
    exact and smooth in the parameters, χ² tails included), and `start` moves the fresh model to
    a start whose basin holds the global optimum (its own initialisation when that one does), so
    that gradient descent ends at the ideal and not at a local optimum. Other models in 1-D/2-D
    (a flow): quadrature on a grid over the data's box (`doubled_box`); when more than
    `leak_tolerance` of Q's mass leaves it, the box is doubled until it holds the model's samples
    before the next step; how often it was doubled is saved in checkpoints, so a resumed run
    uses the same grid. Higher dimensions: the unbiased Monte Carlo estimate with the proposal
    (P + Q)/2 from one data batch and one reparameterised model batch.
    """

    name = "direct"
    needs_model_density = True
    needs_data_density = True
    leak_tolerance = 1e-3
    divergence: FDivergence

    def __init__(self, data: ToyData, divergence: FDivergence, grid_points: int | None) -> None:
        super().__init__()
        self.data = data
        self.row = divergence  # the row minimised
        self.divergence = pinned(divergence)  # its target (the gan row's is js)
        self.grid_points = grid_points
        self._doublings = 0  # of the data's box
        self._leaked = False
        self._grid: DataGrid | None = None
        self._landscape: Landscape | None = None
        self._floor = float(divergence.f(torch.tensor(1.0, dtype=torch.float64)))  # D_f(P‖P)
        self.search: IdealSearch | None = None  # the search `start` ran (this session only)

    def landscape(self) -> Landscape:
        """The ideal's quadrature for this data (1-D/2-D), built once."""
        if self._landscape is None:
            self._landscape = Landscape(self.data)
        return self._landscape

    def start(self, model: GaussianModel) -> str:
        """Search the ideal (with the model's initialisation as one more start) and move the model
        to the start whose descent reaches the global optimum from the lowest value; say so."""
        own = "the model's initialisation"
        fit = GaussianFit.of(model.mean.detach().cpu(), model.covariance.detach().cpu())
        self.search = search = IdealSearch(self.landscape(), self.row).run([(own, fit)])
        chosen = search.global_start()
        ideal = search.ideal.value
        if chosen == own:
            return f"direct: the model's initialisation lies in the ideal's basin ({ideal:.6g})"
        model.assign(search.starts[chosen].mean, search.starts[chosen].cov)
        reached = [o.value for o in search.optima if own in o.starts]
        where = (
            "not finite"
            if not reached
            else "in the ideal's basin too"
            if reached[0] <= ideal
            else f"in a local optimum's basin ({reached[0]:.6g})"
        )
        return (
            f"direct: starting from '{chosen}', the start nearest the global optimum "
            f"{ideal:.6g} in value (the model's initialisation is {where})"
        )

    # the quadrature box is part of the objective's state ------------------------------------
    def get_extra_state(self) -> Any:
        return {"doublings": self._doublings, "leaked": self._leaked}

    def set_extra_state(self, state: Any) -> None:
        self._doublings = state["doublings"]
        self._leaked = state["leaked"]
        self._grid = None

    def _current_grid(self, model: GenerativeModel, device: torch.device) -> DataGrid:
        if self._leaked:
            # Noise of its own (seeded by the box), so widening never shifts the training noise.
            local = torch.Generator(device=device).manual_seed(self._doublings)
            with torch.no_grad():
                needed = covering_box(self.data, model.sample(4096, local))[0]
            self._doublings = min(max(needed, self._doublings + 1), MAX_DOUBLINGS)
            self._leaked = False
            self._grid = None
        if self._grid is None:
            low, high = doubled_box(self.data, self._doublings)
            self._grid = DataGrid(self.data, low, high, self.grid_points).to(device)
        return self._grid

    def model_loss(
        self, model: GenerativeModel, batch: Tensor, generator: torch.Generator
    ) -> Tensor:
        if isinstance(model, GaussianModel) and self.data.dim <= 2:
            landscape = self.landscape()  # (on the CPU, in float64, whatever the model's device)
            chol = model.scale_tril.cpu()
            points = landscape.u_points_for(chol)
            value = landscape.gaussian_value(self.row, model.mean.cpu(), chol, points)
            # the value D, the gradient of log(1 + D − f(1)) (D's descent directions, scaled so
            # that a χ² value of 1e20 far from the optimum still gives finite steps)
            tamed = torch.log1p(value - self._floor)
            return (tamed + (value - tamed).detach()).to(batch)
        if self.data.dim > 2:
            x, log_q_model = model.sample_with_log_prob(len(batch), generator)
            return monte_carlo_f_divergence(
                self.row,
                self.data.log_prob(batch),
                model.log_prob(batch),
                self.data.log_prob(x),
                log_q_model,
            )
        held = self._current_grid(model, batch.device)
        log_q = model.log_prob(held.points).to(torch.float64)
        mass = integrate(log_q.detach().exp(), held.grid)
        self._leaked = bool(mass < 1.0 - self.leak_tolerance) and self._doublings < MAX_DOUBLINGS
        return f_divergence(self.row, held.log_p, log_q, held.grid).to(batch.dtype)
