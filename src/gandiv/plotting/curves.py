"""Line figures: a run's training curves, and a sweep's final metrics against a swept value."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gandiv.plotting.style import METRIC_COLOURS, METRIC_LABELS, figure_legend, new_figure

LOSS_KEYS = ("loss", "critic_loss", "bound")  # what training optimises, and the critic's estimate
DIVERGENCE_KEYS = ("kl_pq", "kl_qp", "js", "objective_divergence")  # ground truth, in nats
DECADES = 2.0  # a panel whose positive values span this many decades gets a log y axis


def as_float(value: Any) -> float:
    """A CSV cell or JSON value as a float: NaN for missing, empty, non-numeric or boolean."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _log_scale_wanted(values: np.ndarray) -> bool:
    """Log y when the positive values span `DECADES` decades and the rest are numerical zeros
    (|v| ≤ 1e-3 of the largest value, as a quadrature estimate of a vanishing divergence gives)."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if positive.size < 2 or positive.max() / positive.min() < 10**DECADES:
        return False
    return bool(np.all(np.abs(finite[finite <= 0]) <= 1e-3 * positive.max()))


def _finish_axis(ax: Axes, values: list[np.ndarray], empty: str) -> None:
    if not values:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    if _log_scale_wanted(np.concatenate(values)):
        ax.set_yscale("log", nonpositive="mask")
    ax.grid(True, which="major", alpha=0.3)


def curves_figure(records: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """Training curves from metrics.jsonl records, each with "step": the losses (and the
    critic's divergence estimate "bound") against step on the left, the ground-truth divergences
    ("kl_pq", "kl_qp", "js", "objective_divergence", in nats) on the right. A record that lacks a
    key or holds NaN or null for it is skipped there (the line joins its neighbours: ground truth
    is logged less often than losses); a key no record has gets no line. A panel whose values span
    two decades or more gets a log y axis."""
    fig = new_figure(10.0, 4.4)
    axes = fig.subplots(1, 2)
    steps = np.array([as_float(r.get("step")) for r in records])
    order = np.argsort(steps, kind="stable")
    panels = (
        (axes[0], LOSS_KEYS, "training losses", "loss"),
        (axes[1], DIVERGENCE_KEYS, "ground-truth divergences", "divergence (nats)"),
    )
    for ax, keys, panel_title, ylabel in panels:
        drawn = []
        for key in keys:
            values = np.array([as_float(r.get(key)) for r in records])[order]
            keep = np.isfinite(values) & np.isfinite(steps[order])
            if not keep.any():
                continue
            ax.plot(
                steps[order][keep], values[keep], color=METRIC_COLOURS[key], linewidth=1.6,
                linestyle="--" if key == "objective_divergence" else "-",  # often equals a KL
                marker="o" if keep.sum() < 30 else None, markersize=3, label=METRIC_LABELS[key],
            )  # fmt: skip
            drawn.append(values[keep])
        _finish_axis(ax, drawn, "no values logged")
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if drawn:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
    fig.suptitle(title)
    return fig


def _group_sort_key(group: tuple[str, ...]) -> tuple[Any, ...]:
    """Numbers in numeric order, then text."""
    return tuple((0, as_float(v), "") if math.isfinite(as_float(v)) else (1, 0.0, v) for v in group)


def sweep_figure(
    rows: Sequence[Mapping[str, Any]],
    x_key: str,
    metrics: Sequence[str],
    group_keys: Sequence[str],
    title: str,
) -> Figure:
    """Each metric (one panel each) against the swept numeric value `x_key`, one line per
    combination of the `group_keys` values (shared legend) — e.g. kl_pq and kl_qp against
    objective.pi, Huszár's JS_π interpolation.

    Rows are dicts as read from sweep.csv (strings or numbers); rows whose "status" is present and
    not "ok" are skipped, as are cells that are empty or not numbers. Rows of one group at the same
    x (seeds) are averaged and also shown as faint dots. Where rows carry ``ideal_<metric>`` (the
    metric at the ideal fit of each job's target), it is drawn dashed in the group's colour: the
    value the objective would reach if it minimised its target exactly."""
    kept = [r for r in rows if str(r.get("status", "ok")) == "ok"]
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in kept:
        groups.setdefault(tuple(str(row.get(k, "")) for k in group_keys), []).append(row)
    names = sorted(groups, key=_group_sort_key)
    palette = colormaps["tab10"] if len(names) <= 10 else colormaps["viridis"]
    colours = [
        palette(i if len(names) <= 10 else i / max(len(names) - 1, 1)) for i in range(len(names))
    ]
    fig = new_figure(max(4.4 * len(metrics), 5.0), 4.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    labels: dict[tuple[str, ...], str] = {}  # the groups drawn in some panel
    with_ideal = False
    for ax, metric in zip(axes, metrics, strict=True):
        drawn = []
        for name, colour in zip(names, colours, strict=True):
            x = np.array([as_float(r.get(x_key)) for r in groups[name]])
            y = np.array([as_float(r.get(metric)) for r in groups[name]])
            keep = np.isfinite(x) & np.isfinite(y)
            if not keep.any():
                continue
            xs, inverse, counts = np.unique(x[keep], return_inverse=True, return_counts=True)
            means = np.bincount(inverse, weights=y[keep]) / counts
            label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, name, strict=True))
            ax.plot(xs, means, color=colour, marker="o", linewidth=1.6, label=label)
            if (counts > 1).any():
                ax.scatter(x[keep], y[keep], s=10, color=colour, alpha=0.35, linewidths=0)
            labels[name] = label
            drawn.append(means)
            ideal = np.array([as_float(r.get(f"ideal_{metric}")) for r in groups[name]])
            known = np.isfinite(x) & np.isfinite(ideal)
            if known.any():
                at, where = np.unique(x[known], return_inverse=True)
                ideals = np.bincount(where, weights=ideal[known]) / np.bincount(where)
                ax.plot(at, ideals, color=colour, linestyle="--", linewidth=1.2)
                with_ideal = True
                drawn.append(ideals)
        _finish_axis(ax, drawn, f"no '{metric}' values")
        label = METRIC_LABELS.get(metric, metric)
        ax.set_title(label)
        ax.set_xlabel(x_key)
        nats = metric in DIVERGENCE_KEYS or metric.startswith("spread_")
        ax.set_ylabel(f"{label} (nats)" if nats else label)
    handles = []
    if group_keys:
        handles = [
            Line2D([], [], color=colour, marker="o", linewidth=1.6, label=labels[name])
            for name, colour in zip(names, colours, strict=True)
            if name in labels
        ]
    if with_ideal:
        handles.append(
            Line2D([], [], color="0.3", linestyle="--", label="the ideal fit of each job's target")
        )
    if handles:
        figure_legend(fig, handles)
    fig.suptitle(title)
    return fig
