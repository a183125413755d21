"""The fidelity suite (benchmarks/fidelity.py): every objective with a target, at its own
defaults, lands within 0.1 of its ideal in every mean and standard deviation in at least 4 of 5
seeds on each suite problem (slow: about an hour on 2 cores)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "fidelity.py"
# Left out, as docs/fidelity.md reports: the neyman game overshoots on fgan_1d (its run health
# flags it).
TARGETED = [
    "gan",
    "logit_gan",
    "reverse_kl_fgan",
    *(f"fgan_{row}" for row in ("kl", "reverse_kl", "pearson", "squared_hellinger", "jeffrey")),
    "fgan_js",
    *(f"js_pi_{pi}" for pi in (0.1, 0.5, 0.9)),
]


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["default", "fgan_1d"])
def test_every_objective_with_a_target_lands_on_its_ideal_at_its_defaults(tmp_path, problem):
    args = ["--problems", problem, "--seeds", "5", "--objectives", *TARGETED]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "fidelity.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["objective"] for r in rows} == set(TARGETED)
    for row in rows:
        within, seeds = (int(n) for n in row["within 0.1"].split("/"))
        assert within >= 4 and seeds == 5, row
        assert "failed" not in row["not completed or unhealthy"], row
        # every run completed (a health warning alone, e.g. a transient spike, is allowed)
        issues = [i for i in row["not completed or unhealthy"].split("; ") if i]
        assert all(i.endswith("× unhealthy") for i in issues), row
