"""Shared helpers: run the real `gandiv` command, in-process or as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from gandiv.cli import main

# Settings that make a real run take a second or two.
# trainer/default.yaml's settings, which every objective used before the games had their own
SHARED_SETTINGS = [
    "trainer.lr=0.01",
    "trainer.lr_d=null",
    "trainer.betas=[0.9,0.999]",
    "trainer.critic_steps=1",
    "trainer.lr_schedule=constant",
]

TINY = [
    "trainer.steps=40",
    "trainer.log_every=10",
    "trainer.eval_every=20",
    "trainer.num_samples=500",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread per test: the fastest for the small models tested (gandiv's own
    trainer.threads default), and `make test` already runs one pytest worker per core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def gandiv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Call `gandiv ARGS...` in-process with the working directory at `tmp_path`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gandiv"])

    def call(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run the installed command line in a subprocess (what a user types)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "gandiv", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding .hydra/) under `root`, oldest first."""
    return sorted(p.parent for p in root.glob("outputs/*/*/.hydra"))


def only_run(root: Path) -> Path:
    runs = run_dirs(root)
    assert len(runs) == 1, runs
    return runs[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under `root`, and every directory, by relative path (any change,
    addition or removal: an empty directory left behind too)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "directory"
        for p in sorted(root.rglob("*"))
    }


def final_model_state(run: Path) -> dict[str, Any]:
    """The model's parameters in a run's last checkpoint."""
    import torch

    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def metrics_without_time(run: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]
