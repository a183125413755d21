"""One line that names the place and what to do, for what the catalogue cannot set up by
arguments alone: write failures (a full disk) in eval, plot and a run's final figures, read-only
runs and sweeps, diverged (NaN) checkpoints, a reader that goes away (`| head`), a stop signal."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from gandiv import cli
from gandiv.errors import Interrupted
from gandiv.training import run_dir

from ..conftest import TINY, digest
from .conftest import copy_run

CHEAP_EVAL = [
    "eval.critic.steps=1",
    "eval.critic.batch_size=2",
    "eval.critic.model_samples=2",
    "eval.num_samples=100",
    "eval.nearest=[kl]",
    "eval.critic.divergences=[js]",
]


def _full_disk_for(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Writes of files ending in `suffix` fail halfway with ENOSPC (a full disk)."""
    real_write = run_dir.atomic_write

    def write(path: Path, content: Any, **kwargs: Any) -> None:
        if not path.name.endswith(suffix):
            return real_write(path, content, **kwargs)

        def half_then_enospc(handle: Any) -> None:
            handle.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")

        return real_write(path, half_then_enospc, **kwargs)

    monkeypatch.setattr(run_dir, "atomic_write", write)


def _one_line(err: str, command: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"gandiv {command}: error: "), err
    assert ".tmp-" not in err, err  # the file the user knows, not a temporary one
    return err


@pytest.mark.parametrize(
    ("command", "suffix", "extra"),
    [("plot", ".png", []), ("eval", "eval.json", CHEAP_EVAL)],
)
def test_a_full_disk_in_eval_or_plot_names_the_file_in_one_line(
    gandiv, tmp_path, finished_runs, monkeypatch, command, suffix, extra
):
    run = copy_run(finished_runs["gaussian"], tmp_path / "run")
    before = {k: v for k, v in digest(run).items() if not k.startswith(("figures/", "eval.log"))}
    _full_disk_for(monkeypatch, suffix)
    result = gandiv(command, f"run={run}", *extra)
    assert result.code == 2
    err = _one_line(result.err, command)
    assert f"{run}/" in err and "No space left on device" in err
    assert "the run directory must be writable" in err
    assert "hydra.run.dir" not in err  # not an option of eval or plot
    assert not list(run.rglob("*.tmp-*"))
    after = {k: v for k, v in digest(run).items() if not k.startswith(("figures/", "eval.log"))}
    assert after == before


def test_a_full_disk_while_drawing_a_runs_final_figures_names_the_file(
    gandiv, tmp_path, monkeypatch
):
    _full_disk_for(monkeypatch, ".png")
    result = gandiv("train", *TINY, "hydra.run.dir=run")
    assert result.code == 2
    err = _one_line(result.err, "train")
    assert f"error: {tmp_path}/run/figures/" in err and ".png: No space left on device" in err


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """`path` and everything in it read-only, for root too (the immutable flag)."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
        return
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr to make a directory read-only for root")
    made = subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable flag: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "resume={run}", "trainer.steps=80"], "resume: '{run}' is read-only; make"),
        (["eval", "run={run}"], "run: '{run}' is read-only; make the run writable (chmod -R u+w"),
        (["plot", "run={run}"], "run: '{run}' is read-only; make the run writable"),
        (["sweep", "summarize", "{root}"], "{root}: is read-only; make the sweep directory writ"),
        (["eval", "run={root}"], "run: '{root}' is read-only; make the run writable"),
    ],
)
def test_read_only_runs_and_sweeps_are_refused_in_one_line(
    gandiv, tmp_path, finished_runs, args, message
):
    root = tmp_path / "sweep"
    run = copy_run(finished_runs["gaussian"], root / "0")
    places = {"{run}": str(run), "{root}": str(root)}

    def fill(text: str) -> str:
        for name, value in places.items():
            text = text.replace(name, value)
        return text

    before = digest(tmp_path)
    with _read_only(root):
        result = gandiv(*map(fill, args))
    assert result.code == 2
    assert fill(message) in _one_line(result.err, args[0])
    assert digest(tmp_path) == before


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_a_diverged_checkpoint_is_neither_evaluated_nor_drawn(
    gandiv, tmp_path, finished_runs, command
):
    run = copy_run(finished_runs["gaussian"], tmp_path / "run")
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] * float("nan")
    torch.save(state, path)
    before = digest(tmp_path)
    result = gandiv(command, f"run={run}")
    assert result.code == 3  # the code of a run whose parameters became NaN/Inf
    err = _one_line(result.err, command)
    assert f"{path}: the parameters are non-finite (NaN/Inf) at step 40 (model.{name})" in err
    assert digest(tmp_path) == before


@pytest.mark.parametrize("args", [["plot", "--help"], ["train", "--help"], ["--help"]])
def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path, args):
    """`gandiv plot --help | head -1`: the pipe closes before the help is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gandiv", *args],
            cwd=tmp_path,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 0 and result.stderr == ""


def test_a_stop_signal_names_the_run_to_resume(capsys):
    with pytest.raises(SystemExit) as stopped, cli._reported("train"):
        raise Interrupted(signal.SIGTERM, "outputs/2026-01-01/12-00-00-000000")
    assert stopped.value.code == 143
    assert capsys.readouterr().err == (
        "gandiv train: interrupted by signal 15; checkpoint saved, resume with "
        "resume=outputs/2026-01-01/12-00-00-000000\n"
    )
