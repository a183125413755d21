"""Sweep summaries: one row per job of a multirun, written at the sweep's root.

`SweepSummary` is a Hydra callback (registered in ``conf/train.yaml``) that runs when a multirun
ends, whatever the launcher. It writes ``sweep.csv``: per job its number, its overrides, its
status (``ok``, or ``failed`` with its exit code and error), its health (``ok``, or ``warning:``
and the symptoms' names, from the summary's ``health`` block) and the final metrics of its
``summary.json``; ``seeds.csv`` when ``trainer.seed`` was swept: per setting the mean and standard
deviation of each metric over seeds; and ``sweep.png``: each ground-truth metric against the swept
numeric value, one line per combination of the other swept keys (seeds averaged). A sweep that
compares ``objective=direct`` with ``objective=fgan`` over divergences for a 1-D Gaussian (the
f-GAN paper's experiment, ``+experiment=fgan_mixture``) also gets ``table.md``/``table.csv``: per
divergence the direct and adversarial (μ, σ) and the true divergence of each fit.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from gandiv.errors import EXIT_CRASH, FAILED_JOBS, UserError, first_line
from gandiv.plotting.curves import sweep_figure
from gandiv.training.run_dir import atomic_write_bytes

log = logging.getLogger("gandiv")

# The final values of summary.json a sweep's table carries (those a run has), and those its
# figure draws: ground truth on the data (kl_*, js), on the spread densities (spread_*: for
# objective=spread and instance noise), the ICA Amari distance, and on data with modes (mixtures)
# the final samples' mode metrics (`gandiv.evaluation.modes`).
METRICS = (
    "steps",
    "loss",
    "kl_pq",
    "kl_qp",
    "js",
    "objective_divergence",
    "spread_kl_pq",
    "spread_kl_qp",
    "spread_js",
    "spread_objective_divergence",
    "amari_distance",
    "modes_covered",
    "modes_n_modes",
    "modes_high_quality",
    "modes_hist_js",
    "steps_per_s",
)
DRAWN = ("kl_pq", "kl_qp", "js", "spread_kl_pq", "spread_kl_qp", "spread_js", "amari_distance")
# From summary.json's ideal block: the target's ideal value, the fit's gap over it (nats) and
# its 2-Wasserstein distance to it (columns ideal_value, ideal_gap, ideal_distance), and the
# ideal fit's ground truth (ideal_kl_pq, ideal_kl_qp, ideal_js: drawn dashed in sweep.png).
IDEAL_KEYS = ("value", "gap", "distance")
SEED = "trainer.seed"
# What a sweep's root may hold once summarised.
SUMMARY_FILES = ("sweep.csv", "seeds.csv", "table.csv", "table.md", "sweep.png")


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            out.update(_flatten(f"{prefix}_{i}", item))
        return out
    return {prefix: value}


def health_label(health: dict[str, Any]) -> str:
    """A job's health in one cell: ``ok``, or ``warning:`` and its symptoms' names."""
    names = [str(s.get("name")) for s in health.get("symptoms", []) if isinstance(s, dict)]
    status = str(health.get("status", ""))
    return f"{status}: {' '.join(names)}" if status == "warning" and names else status


def unhealthy(rows: list[dict[str, Any]]) -> str | None:
    """One line naming the jobs that completed with health warnings (None: there are none)."""
    jobs = [f"{r['job']} ({r['health']})" for r in rows if r.get("health", "ok") != "ok"]
    if not jobs:
        return None
    return f"jobs completed with health warnings: {', '.join(jobs)} (see sweep.csv)"


def _damaged(path: Path, err: Exception) -> UserError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else first_line(str(err))
    return UserError(
        str(path),
        f"unreadable ({reason}); the job's file is damaged: restore it, or move the job "
        "out of the sweep",
    )


def _read_overrides(path: Path) -> list[str]:
    """A job's .hydra/overrides.yaml: a list of `key=value` strings."""
    try:
        overrides = OmegaConf.load(path)
    except Exception as err:  # YAML errors, a directory, a file that cannot be read
        raise _damaged(path, err) from None
    if not isinstance(overrides, ListConfig) or not all(isinstance(o, str) for o in overrides):
        raise UserError(str(path), "not a list of overrides (key=value); the file is damaged")
    return [str(o) for o in overrides]


def _read_summary(path: Path) -> dict[str, Any]:
    """A job's summary.json: a JSON object."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _damaged(path, err) from None
    if not isinstance(summary, dict):
        raise UserError(str(path), "not a JSON object; the file is damaged")
    return summary


def job_rows(root: Path) -> list[dict[str, Any]]:
    """One row per job directory under `root` (a multirun's sweep directory)."""
    jobs = [p for p in root.iterdir() if (p / ".hydra" / "overrides.yaml").exists()]
    rows = []
    for job in sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    ):
        overrides = _read_overrides(job / ".hydra" / "overrides.yaml")
        row: dict[str, Any] = {"job": job.name}
        row.update(dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o))
        summary_path = job / "summary.json"
        if summary_path.exists():
            summary = _read_summary(summary_path)
            row["status"] = "ok" if summary.get("status") == "completed" else summary.get("status")
            for key in ("exit_code", "error"):
                if key in summary:
                    row[key] = summary[key]
            health = summary.get("health")
            if isinstance(health, dict):
                row["health"] = health_label(health)
            row.update({k: summary[k] for k in METRICS if k in summary})
            ideal = summary.get("ideal") or {}
            if ideal.get("divergence"):
                row["ideal_divergence"] = ideal["divergence"]
                row.update({f"ideal_{k}": ideal.get(k) for k in IDEAL_KEYS})
                truth = ideal.get("ground_truth") or {}
                row.update({f"ideal_{k}": v for k, v in truth.items() if k in DRAWN})
            for name, value in summary.get("params", {}).items():
                row.update(_flatten(name, value))
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def comparison_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Direct against adversarial fits of a 1-D Gaussian, per divergence (mean ± std over seeds)."""
    fits = [
        r
        for r in rows
        if r.get("status") == "ok"
        and r.get("objective") in ("direct", "fgan")
        and "objective.divergence" in r
        and "mean_0" in r
        and "cov_0_0" in r
        and "mean_1" not in r
    ]
    if {r["objective"] for r in fits} != {"direct", "fgan"}:
        return None
    table = []
    for divergence in dict.fromkeys(r["objective.divergence"] for r in fits):
        entry: dict[str, Any] = {"divergence": divergence}
        for objective, label in (("direct", "direct"), ("fgan", "adversarial")):
            group = [
                r
                for r in fits
                if r["objective"] == objective and r["objective.divergence"] == divergence
            ]
            if not group:
                continue
            for key, values in (
                ("mu", [float(r["mean_0"]) for r in group]),
                ("sigma", [math.sqrt(float(r["cov_0_0"])) for r in group]),
                ("D_f", [float(r.get("objective_divergence", math.nan)) for r in group]),
            ):
                mean, std = _mean_std(values)
                entry[f"{label}_{key}"] = round(mean, 4)
                if len(group) > 1:
                    entry[f"{label}_{key}_std"] = round(std, 4)
            entry[f"{label}_runs"] = len(group)
        table.append(entry)
    return table


def _markdown(table: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in table for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def swept_keys(rows: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """The numeric override that varies across jobs (the x axis) and the other varying ones."""
    overrides: list[str] = []
    for row in rows:  # a row holds its job, then its overrides, then "status" and the results
        keys = list(row)
        overrides += [k for k in keys[1 : keys.index("status")] if k not in overrides]
    varying = [k for k in overrides if len({str(r.get(k)) for r in rows}) > 1]
    numeric = [k for k in varying if all(_number(r.get(k)) is not None for r in rows)]
    numeric = [k for k in numeric if k != SEED] or numeric
    x_key = numeric[0] if numeric else None
    return x_key, [k for k in varying if k not in (x_key, SEED)]  # seeds are averaged over


def seed_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Per setting (the swept values other than the seed): the number of completed runs and each
    final metric's mean and standard deviation over seeds; None when the seed was not swept."""
    if not any(str(r.get(SEED)) != str(rows[0].get(SEED)) for r in rows):
        return None
    x_key, others = swept_keys(rows)
    keys = [k for k in (x_key, *others) if k not in (None, SEED)]
    settings: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        settings.setdefault(tuple(str(row.get(k, "")) for k in keys), []).append(row)
    table = []
    for setting, group in settings.items():
        done = [r for r in group if r.get("status") == "ok"]
        entry: dict[str, Any] = dict(zip(keys, setting, strict=True))
        entry.update({"runs": len(group), "ok": len(done)})
        for metric in METRICS[1:]:
            values = [v for r in done if (v := _number(r.get(metric))) is not None]
            if values:
                mean, std = _mean_std(values)
                entry[f"{metric}_mean"] = round(mean, 6)
                entry[f"{metric}_std"] = round(std, 6)
        table.append(entry)
    return table


def describe(root: Path, rows: list[dict[str, Any]]) -> str:
    """A few lines for the terminal: how many jobs finished, and the files written."""
    failed = [r["job"] for r in rows if r.get("status") != "ok"]
    lines = [f"{root}: {len(rows)} jobs, {len(rows) - len(failed)} completed"]
    if failed:
        lines[0] += f", failed: {', '.join(failed)}"
    warned = unhealthy(rows)
    if warned:
        lines.append(warned)
    written = [name for name in SUMMARY_FILES if (root / name).is_file()]
    lines.append(f"wrote {', '.join(written)}")
    return "\n".join(lines) + "\n"


def write_summary_file(path: Path, data: bytes) -> None:
    """One summary file at a sweep's root (atomic); a place that cannot take it is named."""
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise UserError(
            str(path),
            f"cannot be written ({err.strerror or err}); make the sweep directory writable "
            "(and remove anything in the file's place), then run gandiv sweep summarize "
            f"{path.parent}",
        ) from None


def check_summary_places(root: Path, names: tuple[str, ...] = SUMMARY_FILES) -> None:
    """Before a sweep's summary files are written: each one's place can take a file."""
    for name in names:
        path = root / name
        if path.is_dir() or (path.exists() and not os.access(path, os.W_OK)):
            raise UserError(
                str(path),
                "cannot be written (a folder or a read-only file is in its place); move it away, "
                f"then summarize the sweep again (gandiv sweep summarize {root})",
            )


def write_sweep_summary(
    root: Path, rows: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Write ``sweep.csv``, ``sweep.png`` and (where it applies) the comparison table; every job's
    files are read (`rows`, if not given) before anything is written."""
    rows = job_rows(root) if rows is None else rows
    if not rows:
        return rows
    check_summary_places(root)
    write_summary_file(root / "sweep.csv", csv_text(rows).encode())
    seeds = seed_table(rows)
    if seeds:
        write_summary_file(root / "seeds.csv", csv_text(seeds).encode())
    table = comparison_table(rows)
    if table:
        write_summary_file(root / "table.csv", csv_text(table).encode())
        write_summary_file(root / "table.md", _markdown(table).encode())
    x_key, group_keys = swept_keys(rows)
    metrics = [m for m in DRAWN if any(m in r for r in rows)]
    if x_key is not None and metrics:
        objectives = {str(r.get("objective", "")) for r in rows} - {""}
        what = f"{objectives.pop()} sweep" if len(objectives) == 1 else "sweep"
        title = f"{what} {root.parent.name}/{root.name}: ground truth against {x_key}"
        figure = sweep_figure(rows, x_key, metrics, group_keys, title)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        write_summary_file(root / "sweep.png", buffer.getvalue())
    return rows


class SweepSummary(Callback):
    """Hydra callback: summarise every multirun when it ends (in the process that launched it,
    whichever launcher ran the jobs), and note the jobs that did not complete."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = write_sweep_summary(Path(config.hydra.sweep.dir))
        warned = unhealthy(rows)
        if warned:
            log.warning("%s", warned)
        FAILED_JOBS[:] = [
            (str(r["job"]), int(r.get("exit_code", EXIT_CRASH)))
            for r in rows
            if r.get("status") != "ok"
        ]
