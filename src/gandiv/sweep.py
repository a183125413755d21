"""Sweep summaries: one row per job of a multirun, written at the sweep's root.

`SweepSummary` is a Hydra callback (registered in ``conf/train.yaml``) that runs when a multirun
ends, whatever the launcher. It writes ``sweep.csv``: per job its number, its overrides, its status
and the final metrics of its ``summary.json``. A sweep that compares ``objective=direct`` with
``objective=fgan`` over divergences for a 1-D Gaussian (the f-GAN paper's experiment,
``+experiment=fgan_mixture``) also gets ``table.md``/``table.csv``: per divergence the direct and
adversarial (μ, σ) and the true divergence of each fit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gandiv.training.run_dir import atomic_write

METRICS = ("steps", "loss", "kl_pq", "kl_qp", "js", "objective_divergence", "steps_per_s")


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            out.update(_flatten(f"{prefix}_{i}", item))
        return out
    return {prefix: value}


def job_rows(root: Path) -> list[dict[str, Any]]:
    """One row per job directory under `root` (a multirun's sweep directory)."""
    jobs = [p for p in root.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    rows = []
    for job in sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    ):
        overrides = [str(o) for o in OmegaConf.load(job / ".hydra" / "overrides.yaml")]
        row: dict[str, Any] = {"job": job.name}
        row.update(dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o))
        summary_path = job / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            row["status"] = "ok" if summary.get("status") == "completed" else summary.get("status")
            row.update({k: summary[k] for k in METRICS if k in summary})
            for name, value in summary.get("params", {}).items():
                row.update(_flatten(name, value))
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
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


def write_sweep_summary(root: Path) -> list[dict[str, Any]]:
    """Write ``sweep.csv`` (and the comparison table where it applies) at a sweep's root."""
    rows = job_rows(root)
    if not rows:
        return rows
    text = _csv(rows)
    atomic_write(root / "sweep.csv", lambda handle: handle.write(text.encode()))
    table = comparison_table(rows)
    if table:
        table_csv, table_md = _csv(table), _markdown(table)
        atomic_write(root / "table.csv", lambda handle: handle.write(table_csv.encode()))
        atomic_write(root / "table.md", lambda handle: handle.write(table_md.encode()))
    return rows


class SweepSummary(Callback):
    """Hydra callback: summarise every multirun when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(Path(config.hydra.sweep.dir))
