"""Runs shared by the reliability tests: trained once per session, copied into each test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from gandiv.cli import main

from ..conftest import TINY

# One finished run per config, trained once: the catalogue copies them into every test.
SOURCES = {
    "gaussian": [*TINY, "plot.every=0"],
    "flow": ["trainer.steps=2", "trainer.num_samples=100", "plot.every=0", "model=flow"],
}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished tiny runs (`gaussian`, and `flow` for a checkpoint of another config)."""
    root = tmp_path_factory.mktemp("finished")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(sys, "argv", ["gandiv"])
        for name, args in SOURCES.items():
            runs[name] = root / name
            try:
                main(["train", *args, f"hydra.run.dir={runs[name]}"])
            except SystemExit as exit_:  # pragma: no cover - a broken build
                raise AssertionError(f"the {name} source run failed: {exit_.code}") from None
    return runs


def copy_run(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination
