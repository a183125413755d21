"""Run health (README: "Run health"): did a run that completed fail in substance?

A run can end without a NaN and still be broken: its loss blew up by orders of magnitude, its
samples flew away from the data, its parameters never moved, its fit wandered far from where it
had been, or it stopped far from its ideal. `assess` looks for each symptom in what the run left
(the metrics records, the parameter change, the final samples, the data's box, the gap to the
ideal) and returns the summary's ``health`` block; `warning_line` is the log's last word for an
unhealthy run. Everything here takes plain values: no files, no logging, no config.

The thresholds are chosen so that a healthy run is far from each of them (a healthy critic loss
wanders within a factor of a few of its median; a healthy fit puts no sample a box-width outside
the box holding all but 1e-6 of the data's mass; Adam moves every parameter by about the learning
rate per step), while each broken run of issue 18 crosses at least one by orders of magnitude.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# A logged loss (or bound) spiked: its magnitude exceeded SPIKE_FACTOR (10²) times its running
# scale, the median magnitude of all its earlier values, or SPIKE_FLOOR nats when that is smaller
# (losses that hover around 0, like a converged bound, have no scale of their own).
SPIKE_FACTOR = 100.0
SPIKE_FLOOR = 1.0
LOSS_KEYS = ("loss", "critic_loss", "bound")
# The samples left the data's region: more than FAR_SHARE of the final samples lie farther from
# the data's box (all but 1e-6 of its mass) than the box's own diagonal, i.e. farther from every
# data point than the data's extent. The data put < 1e-6 of their mass there, so such a model is
# at total-variation distance > 0.1 from the data on that region alone; a few stragglers of a
# half-trained generator (about 2% after 40 steps of an mlp on ring8) stay below.
FAR_DIAGONALS = 1.0
FAR_SHARE = 0.1
# The parameters never moved: ‖θ_end − θ_start‖ / ‖θ_start‖ below FROZEN_CHANGE. One Adam step
# moves each parameter by about the learning rate (≥ 1e-4 relative for O(1) parameters), and
# float32 resolves 6e-8: a change below 1e-6 over a whole run means no step was ever taken (a
# zero gradient, or one so large that Adam's float32 second moment overflowed and every step was 0).
FROZEN_CHANGE = 1e-6
# The fit diverged: the true value of the divergence the objective targets (objective_divergence,
# logged at the evaluation cadence) ended more than DIVERGED_NATS above its best value of the run
# and gave back more than DIVERGED_SHARE of the progress it had made from its first value to its
# best. Only the target counts: a mode-seeking fit rightly lets KL(P‖Q) grow tenfold while its own
# KL(Q‖P) falls. Healthy runs give back < 0.08 nat (the f-GAN mixture table, the default
# objectives); the f-GAN total-variation game gives back 0.18 of its 0.27.
DIVERGED_NATS = 0.1
DIVERGED_SHARE = 0.5
# The fit is far from its ideal: the gap (nats) above this tolerance (gandiv.ideal reports it).
GAP_TOLERANCE = 0.1
# A loss at least this large is named in a frozen run's detail: its gradient may well overflow
# float32 in Adam's second moment (g² > 3.4e38 for |g| > 1.8e19), after which every step is 0.
HUGE_LOSS = 1e15

# The target's true value in the metrics (on the data, and between the spread densities).
TARGETS = ("objective_divergence", "spread_objective_divergence")

# How each symptom reads in the warning line.
TITLES = {
    "loss_spike": "the loss spiked",
    "samples_left_data": "samples left the data's region",
    "parameters_frozen": "the parameters never moved",
    "diverged": "the fit diverged",
    "gap_to_ideal": "the fit is far from its ideal",
}


@dataclass(frozen=True)
class RunSettings:
    """What the advice needs to know of a run's settings (all optional ones: None = no such
    option for this run)."""

    objective: str  # objective.name
    adversarial: bool  # the objective trains a critic
    lr_g: float  # the model's learning rate
    lr_d: float | None = None  # the critic's (adversarial objectives)
    shared_lr: bool = True  # both come from trainer.lr (neither lr_g nor lr_d was set)
    steps: int = 0  # trainer.steps
    batch_size: int = 0  # trainer.batch_size
    critic_steps: int = 1  # trainer.critic_steps
    spectral_norm: bool | None = None  # critic.spectral_norm
    gradient_penalty: float | None = None  # objective.gradient_penalty
    noise: str | None = None  # objective.noise (instance noise of the adversarial objectives)
    generator: str | None = None  # objective.generator (fgan, js_pi)
    divergence: str | None = None  # objective.divergence
    init_std: float | None = None  # model.init_std (the Gaussian model's initial scale)


def _symptom(name: str, detail: str, value: float) -> dict[str, Any]:
    return {"name": name, "detail": detail, "value": value}


def _number(value: Any) -> float | None:
    """A finite float from a metrics value (JSON writes NaN/Inf as null), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _RunningMedian:
    """The median of the values added so far, O(log n) per value (two heaps)."""

    def __init__(self) -> None:
        self.low: list[float] = []  # the smaller half, negated (a max-heap)
        self.high: list[float] = []  # the larger half

    def __len__(self) -> int:
        return len(self.low) + len(self.high)

    def add(self, value: float) -> None:
        heapq.heappush(self.low, -heapq.heappushpop(self.high, value))
        if len(self.low) > len(self.high):
            heapq.heappush(self.high, -heapq.heappop(self.low))

    def median(self) -> float:
        if len(self.high) > len(self.low):
            return self.high[0]
        return 0.5 * (self.high[0] - self.low[0])


def loss_spike(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any] | None, float]:
    """The largest jump of a logged loss over its running scale (the symptom when it exceeds
    SPIKE_FACTOR), and that ratio."""
    worst: tuple[float, str, Any, float, float] | None = None  # ratio, key, step, value, scale
    for key in LOSS_KEYS:
        seen = _RunningMedian()  # of the earlier magnitudes
        for record in records:
            value = _number(record.get(key))
            if value is None:
                continue
            if len(seen):
                scale = max(seen.median(), SPIKE_FLOOR)
                ratio = abs(value) / scale
                if worst is None or ratio > worst[0]:
                    worst = (ratio, key, record.get("step"), value, scale)
            seen.add(abs(value))
    if worst is None:
        return None, 0.0
    ratio, key, step, value, scale = worst
    if ratio <= SPIKE_FACTOR:
        return None, ratio
    detail = (
        f"{key} reached {value:.3g} at step {step}, {ratio:.2g}× its running median scale "
        f"{scale:.3g} (threshold {SPIKE_FACTOR:g}×)"
    )
    return _symptom("loss_spike", detail, ratio), ratio


def samples_left_data(
    samples: np.ndarray, box: np.ndarray
) -> tuple[dict[str, Any] | None, float, float]:
    """Whether the final samples (n, dim) left the data's box (dim, 2) [low, high]: the symptom,
    the share of samples farther from the box than its diagonal (non-finite ones included), and
    the median distance of all samples from the box in diagonals."""
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    box = np.asarray(box, dtype=np.float64)
    low, high = box[:, 0], box[:, 1]
    diagonal = float(np.linalg.norm(high - low))
    if len(x) == 0 or diagonal <= 0.0:
        return None, 0.0, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        outside = np.maximum(np.maximum(low - x, x - high), 0.0)
        distance = np.linalg.norm(outside, axis=1) / diagonal
    distance[~np.isfinite(distance)] = np.inf
    share = float(np.mean(distance > FAR_DIAGONALS))
    median = float(np.median(distance))
    if share <= FAR_SHARE:
        return None, share, median
    detail = (
        f"{share:.0%} of the final samples lie farther than {FAR_DIAGONALS:g} box diagonal "
        f"({diagonal:.3g}) outside the data's box (threshold {FAR_SHARE:.0%}); median distance "
        f"{median:.2g} diagonals"
    )
    return _symptom("samples_left_data", detail, share), share, median


def parameter_change(
    initial: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor]
) -> float:
    """‖θ_final − θ_initial‖ / ‖θ_initial‖ over the parameters both hold (0/0 = 0)."""
    moved = 0.0
    norm = 0.0
    for name, start in initial.items():
        if name not in final:
            continue
        start64 = start.detach().to(torch.float64)
        end64 = final[name].detach().to(start64.device, torch.float64)
        moved += float((end64 - start64).square().sum())
        norm += float(start64.square().sum())
    if moved == 0.0:
        return 0.0
    return math.sqrt(moved) / math.sqrt(norm) if norm > 0.0 else math.inf


def parameters_frozen(change: float, final_loss: float | None) -> dict[str, Any] | None:
    """The symptom when the parameters' relative change over the run is below FROZEN_CHANGE."""
    if change >= FROZEN_CHANGE:
        return None
    detail = (
        f"relative change ‖θ_end − θ_start‖/‖θ_start‖ = {change:.2g} over the run "
        f"(threshold {FROZEN_CHANGE:g})"
    )
    if final_loss is not None and abs(final_loss) >= HUGE_LOSS:
        detail += (
            f"; the loss is {final_loss:.3g}, and gradients beyond about 1e19 overflow Adam's "
            "float32 second moment, which makes every step exactly 0"
        )
    return _symptom("parameters_frozen", detail, change)


def diverged(
    records: Sequence[Mapping[str, Any]], spread: bool = True
) -> tuple[dict[str, Any] | None, float]:
    """The symptom when the objective's target divergence gave back more than DIVERGED_SHARE of
    its progress and more than DIVERGED_NATS, and the largest share given back (0: none; `spread`:
    whether spread_objective_divergence counts, which it does not where σ is annealed)."""
    worst = 0.0
    found: tuple[float, str, float, Any, float, float] | None = None
    for key in TARGETS if spread else TARGETS[:1]:
        series = [(r.get("step"), v) for r in records if (v := _number(r.get(key))) is not None]
        if len(series) < 2:
            continue
        best_step, best = min(series, key=lambda item: item[1])
        first, final = series[0][1], series[-1][1]
        lost = final - best
        share = lost / (first - best) if first > best else (math.inf if lost > 0 else 0.0)
        worst = max(worst, share)
        if lost > DIVERGED_NATS and share > DIVERGED_SHARE and (found is None or share > found[0]):
            found = (share, key, best, best_step, final, first)
    if found is None:
        return None, worst
    share, key, best, step, final, first = found
    detail = (
        f"{key} (the objective's own divergence) fell from {first:.3g} to {best:.3g} at step "
        f"{step}, then rose to {final:.3g}: {share:.0%} of its progress given back (threshold "
        f"{DIVERGED_SHARE:.0%} and {DIVERGED_NATS:g})"
    )
    return _symptom("diverged", detail, share), share


def gap_to_ideal(gap: float | None, tolerance: float) -> dict[str, Any] | None:
    """The symptom when the fit's gap to its ideal (nats) exceeds `tolerance`."""
    if gap is None or math.isnan(gap) or gap <= tolerance:
        return None
    detail = (
        f"the fit is {gap:.3g} nats above its ideal (tolerance {tolerance:g})"
        if math.isfinite(gap)
        else "the fit's target divergence is infinite (its ideal's is finite)"
    )
    return _symptom("gap_to_ideal", detail, gap)


# ------------------------------------------------------------------------------------------------
# advice: the settings to try, per symptom and objective family
def _lr(settings: RunSettings, factor: float) -> list[str]:
    """The learning rate(s) scaled by `factor`, under the keys that set them."""
    lr_g = f"{settings.lr_g * factor:.3g}"
    if not settings.adversarial or settings.lr_d is None:
        return [f"trainer.{'lr' if settings.shared_lr else 'lr_g'}={lr_g}"]
    if settings.shared_lr:
        return [f"trainer.lr={lr_g}"]
    return [f"trainer.lr_g={lr_g}", f"trainer.lr_d={settings.lr_d * factor:.3g}"]


def _stabilise_critic(settings: RunSettings) -> list[str]:
    """An adversarial game that blew up: a smoother, stronger critic and smaller steps."""
    tries = []
    if settings.gradient_penalty is not None and settings.gradient_penalty == 0.0:
        tries.append("objective.gradient_penalty=10")
    if settings.spectral_norm is False:
        tries.append("critic.spectral_norm=true")
    if settings.critic_steps < 5:
        tries.append("trainer.critic_steps=5")
    return tries + _lr(settings, 0.1)


def _smaller_steps(settings: RunSettings) -> list[str]:
    """A density-based (or kernel) fit that blew up: smaller, less noisy steps."""
    tries = _lr(settings, 0.1)
    if settings.objective != "direct" and settings.batch_size:
        tries.append(f"trainer.batch_size={2 * settings.batch_size}")
    return tries


def _unfreeze(settings: RunSettings) -> list[str]:
    tries = []
    if settings.adversarial:
        if settings.generator == "minimax":
            tries.append("objective.generator=nonsaturating")
        elif settings.objective == "gan":
            tries.append("objective=ns_gan")
        if settings.noise == "none":
            tries.append("objective.noise=gaussian")
        tries.append("another trainer.seed")
    elif settings.objective == "direct":
        if settings.init_std is not None:  # a start whose tails the divergence can afford
            factors = {"neyman": (0.5,), "reverse_kl": (0.5,), "pearson": (2.0,), "kl": (2.0,)}
            for factor in factors.get(settings.divergence or "", (0.5, 2.0)):
                tries.append(f"model.init_std={settings.init_std * factor:.3g}")
        moderate = [d for d in ("kl", "js", "squared_hellinger") if d != settings.divergence]
        tries.append(f"objective.divergence={'|'.join(moderate)}")
    else:
        tries += [*_lr(settings, 10.0), "another trainer.seed"]
    return tries


def _closer(settings: RunSettings) -> list[str]:
    """A run that ended far from its ideal: a smoother critic, longer and gentler training."""
    tries = []
    if settings.gradient_penalty is not None and settings.gradient_penalty == 0.0:
        tries.append("objective.gradient_penalty=10")
    if settings.steps:
        tries.append(f"trainer.steps={2 * settings.steps}")
    if settings.adversarial and settings.critic_steps < 5:
        tries.append("trainer.critic_steps=5")
    return [*tries, *_lr(settings, 0.3), "another trainer.seed"]


def advice(symptoms: Sequence[Mapping[str, Any]], settings: RunSettings) -> str | None:
    """The settings to try for these symptoms, most likely to help first, each once (None: no
    symptom). Measured on issue 18's runs (1000 steps, seed 0): the f-GAN Pearson game of an mlp
    on ring8 (samples 2e4 box diagonals away) is made healthy by objective.gradient_penalty=10
    alone or critic.spectral_norm=true alone, not by a ten times smaller trainer.lr; with the
    penalty the total-variation game ends at TV 0.50 with KL(Q‖P) 1.57 (spectral norm: 0.60,
    3.3; trainer.lr=0.001: 0.52, 1.8) and reverse_kl_fgan at KL(Q‖P) 1.58 (spectral norm: 2.16);
    model.init_std=0.5 alone unfreezes the direct Neyman fit."""
    tries: list[str] = []
    for symptom in symptoms:
        name = symptom["name"]
        if name in ("loss_spike", "samples_left_data", "diverged"):
            unstable = _stabilise_critic if settings.adversarial else _smaller_steps
            found = unstable(settings)
        elif name == "parameters_frozen":
            found = _unfreeze(settings)
        else:
            found = _closer(settings)
        tries += [t for t in found if t not in tries]
    return f"try, one at a time: {', '.join(tries)}" if tries else None


# ------------------------------------------------------------------------------------------------
def assess(
    records: Sequence[Mapping[str, Any]],
    settings: RunSettings,
    *,
    change: float | None = None,
    samples: np.ndarray | None = None,
    box: np.ndarray | None = None,
    gap: float | None = None,
    gap_tolerance: float = GAP_TOLERANCE,
    annealed: bool = False,
) -> dict[str, Any]:
    """The ``health`` block of summary.json.

    `records`: the lines of metrics.jsonl; `change`: the model parameters' relative change over
    the run (`parameter_change`; None: not measured, e.g. no step was taken); `samples` (n, dim)
    and `box` (dim, 2): the final model samples and the data's box (None: not checked, e.g.
    images); `gap`: the fit's gap to its ideal in nats (None: no ideal known); `annealed`: the
    spread noise's σ is annealed, so the spread_ divergences of different steps (each at its
    step's σ) are not compared.
    """
    symptoms: list[dict[str, Any]] = []
    measured: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    spike, measured["spike_ratio"] = loss_spike(records)
    if spike is not None:
        symptoms.append(spike)

    if samples is None or box is None:
        skipped["samples_left_data"] = "no data box (images) or no samples"
    else:
        left, measured["far_share"], measured["median_distance"] = samples_left_data(samples, box)
        if left is not None:
            symptoms.append(left)

    if change is None:
        skipped["parameters_frozen"] = "no training step in this run"
    else:
        measured["parameter_change"] = change
        losses = [v for r in records if (v := _number(r.get("loss"))) is not None]
        frozen = parameters_frozen(change, losses[-1] if losses else None)
        if frozen is not None:
            symptoms.append(frozen)

    away, measured["progress_lost"] = diverged(records, spread=not annealed)
    if annealed:
        skipped["diverged (spread_)"] = "σ is annealed: the spread divergences are at different σ"
    if away is not None:
        symptoms.append(away)

    if gap is None:
        skipped["gap_to_ideal"] = "no gap to an ideal known for this run"
    else:
        measured["gap"] = gap
        far = gap_to_ideal(gap, gap_tolerance)
        if far is not None:
            symptoms.append(far)

    return {
        "status": "warning" if symptoms else "ok",
        "symptoms": symptoms,
        "advice": advice(symptoms, settings),
        "measured": measured,
        "skipped": skipped,
        "thresholds": {
            "spike_factor": SPIKE_FACTOR,
            "spike_floor": SPIKE_FLOOR,
            "far_diagonals": FAR_DIAGONALS,
            "far_share": FAR_SHARE,
            "frozen_change": FROZEN_CHANGE,
            "diverged_share": DIVERGED_SHARE,
            "diverged_nats": DIVERGED_NATS,
            "gap_tolerance": gap_tolerance,
        },
    }


def warning_line(health: Mapping[str, Any]) -> str | None:
    """The log's last line for an unhealthy run (None for a healthy one)."""
    if health.get("status") != "warning":
        return None
    found = "; ".join(f"{TITLES[s['name']]} ({s['detail']})" for s in health["symptoms"])
    line = f"unhealthy run: {found}"
    if health.get("advice"):
        line += f" — {health['advice']}"
    return line + " (summary.json: health)"
