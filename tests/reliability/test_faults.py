"""Faults injected into real runs: nothing finished is lost, nothing is corrupted.

Kills and signals hit real `gandiv train` processes; write errors, non-finite values and failing
sweep jobs are injected in-process by patching the write or the loss. A cheap subset runs in the
default suite (a SIGTERM at a fixed step, then resume; NaN in the loss and in the critic's loss);
the rest is slow-marked: `make test-reliability` runs them all.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gandiv.commands import train as train_command
from gandiv.objectives.adversarial import VariationalDivergence
from gandiv.objectives.likelihood import ForwardKL
from gandiv.training import run_dir

from ..conftest import (
    TINY,
    final_model_state,
    metrics_without_time,
    only_run,
    read_json,
    run_cli,
    run_dirs,
)

slow = pytest.mark.slow

# Long enough to be hit mid-run: ~1500 steps, a checkpoint every 100, a log line every 5.
LONG = [
    "objective=reverse_kl",
    "trainer.steps=1500",
    "trainer.log_every=5",
    "trainer.eval_every=250",
    "trainer.checkpoint_every=100",
    "trainer.num_samples=500",
    "plot.every=0",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must end up identical to."""
    root = tmp_path_factory.mktemp("reference")
    result = run_cli("train", *LONG, cwd=root)
    assert result.returncode == 0, result.stderr
    return only_run(root)


def assert_same_run(run: Path, reference: Path) -> None:
    """Same metrics.jsonl (no step missing or logged twice) and the same final parameters."""
    assert metrics_without_time(run) == metrics_without_time(reference)
    expected = final_model_state(reference)
    actual = final_model_state(run)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key
    assert read_json(run / "summary.json")["status"] == "completed"


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gandiv", "train", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _last_logged_step(metrics: Path) -> int:
    if not metrics.is_file():
        return -1
    lines = metrics.read_text().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except ValueError:  # a line being written
            continue
    return -1


def _wait_until(proc: subprocess.Popen, ready: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------------
# SIGKILL at random points, several times in one run
@slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(
    tmp_path, reference, seed
):
    kill_steps = sorted(random.Random(seed).sample(range(100, 1450), 3))
    run: Path | None = None
    for kill_step in kill_steps:
        proc = _start(tmp_path, *LONG) if run is None else _start(tmp_path, f"resume={run}")

        def ready(kill_step: int = kill_step) -> bool:
            saved = list(tmp_path.glob("outputs/*/*/checkpoints/last.pt"))
            return bool(saved) and _last_logged_step(saved[0].parents[1] / "metrics.jsonl") >= (
                kill_step
            )

        _wait_until(proc, ready)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        run = only_run(tmp_path)
        assert not (run / "summary.json").exists()  # it really died mid-run
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] < 1500
    assert run is not None
    resumed = run_cli("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)


# ------------------------------------------------------------------------------------------------
# SIGTERM and SIGINT: a checkpoint, exit 143/130, resumable
# The signal is sent by the training process itself when it begins a chosen step (a patched
# `Objective.begin_step`), so where it lands does not depend on timing.
SIGNAL_AT_STEP = 437
_SIGNAL_AT = """
import os, sys
from gandiv.objectives.base import Objective
from gandiv.cli import main
begin = Objective.begin_step
def begin_step(self, step, _at={at}, _signum={signum}):
    if step == _at:
        os.kill(os.getpid(), _signum)
    begin(self, step)
Objective.begin_step = begin_step
sys.argv = ["gandiv", *sys.argv[1:]]
sys.exit(main())
"""


def _start_signalled_at(cwd: Path, step: int, signum: int, *args: str) -> subprocess.Popen:
    code = _SIGNAL_AT.format(at=step, signum=int(signum))
    return subprocess.Popen(
        [sys.executable, "-c", code, "train", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=slow)],
)
def test_a_stop_signal_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(
    tmp_path, reference, signum, code
):
    proc = _start_signalled_at(tmp_path, SIGNAL_AT_STEP, signum, *LONG)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    run = only_run(tmp_path)
    assert "Traceback" not in err and f"checkpoint saved, resume with resume={run}\n" in err
    assert read_json(run / "summary.json")["status"] == "interrupted"
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    # saved at the signal (the step under way finishes), not at the cadence of 100
    assert step in (SIGNAL_AT_STEP, SIGNAL_AT_STEP + 1), step
    assert metrics_without_time(run)[-1]["step"] <= step
    resumed = run_cli("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)


# ------------------------------------------------------------------------------------------------
# A write error (full disk) while saving a checkpoint
SHORT = ["trainer.steps=60", "trainer.log_every=5", "trainer.eval_every=20", "plot.every=0"]
SHORT += ["trainer.checkpoint_every=10", "trainer.num_samples=500"]


@slow
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(
    gandiv, tmp_path, monkeypatch
):
    assert gandiv("train", *SHORT, "hydra.run.dir=reference").code == 0
    real_write = run_dir.atomic_write
    saved: list[bytes] = []

    def full_disk_on_the_third_checkpoint(path: Path, write: Any, **kwargs: Any) -> None:
        if path.name != "last.pt":
            return real_write(path, write, **kwargs)
        if len(saved) < 2:
            real_write(path, write, **kwargs)
            saved.append(path.read_bytes())
            return None

        def half_then_enospc(handle: Any) -> None:
            handle.write(b"\0" * 1000)  # a torn temporary file
            raise OSError(errno.ENOSPC, "No space left on device")

        return real_write(path, half_then_enospc, **kwargs)

    monkeypatch.setattr(run_dir, "atomic_write", full_disk_on_the_third_checkpoint)
    result = gandiv("train", *SHORT)
    assert result.code == 2
    assert "Traceback" not in result.err and result.err.count("\n") == 1
    assert "checkpoints/last.pt: could not be saved (No space left on device); the previous " in (
        result.err
    )
    run = only_run(tmp_path)
    checkpoints = run / "checkpoints"
    # no temporary file left; the step-20 checkpoint intact, the step-10 one kept before it
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt", "prev.pt"]
    assert (checkpoints / "last.pt").read_bytes() == saved[1]
    assert (checkpoints / "prev.pt").read_bytes() == saved[0]
    assert torch.load(checkpoints / "last.pt", weights_only=True)["step"] == 20

    monkeypatch.setattr(run_dir, "atomic_write", real_write)  # space again
    resumed = gandiv("train", f"resume={run}")
    assert resumed.code == 0, resumed.err
    assert_same_run(run, tmp_path / "reference")


# ------------------------------------------------------------------------------------------------
# NaN/Inf: exit 3 naming the quantity and the step, last good checkpoint kept, summary says so
def _poison_loss(monkeypatch, cls: type, method: str, at_call: int) -> None:
    original = getattr(cls, method)
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        value = original(self, *args, **kwargs)
        if calls["n"] != at_call:
            return value
        if isinstance(value, tuple):  # critic_loss: (loss, the metrics logged)
            loss, metrics = value
            return loss * float("nan"), {**metrics, "critic_loss": loss * float("nan")}
        return value * float("nan")

    monkeypatch.setattr(cls, method, poisoned)


def _poison_parameter(monkeypatch, at_call: int) -> None:
    original = ForwardKL.model_loss
    calls = {"n": 0}

    def poisoned(self, model, batch, generator):
        calls["n"] += 1
        if calls["n"] == at_call:
            with torch.no_grad():  # an Inf in the model's first parameter
                next(model.parameters()).view(-1)[0] = float("inf")
        return original(self, model, batch, generator)

    monkeypatch.setattr(ForwardKL, "model_loss", poisoned)


NON_FINITE = {
    "loss": (
        lambda mp: _poison_loss(mp, ForwardKL, "model_loss", 23),
        [],
        "the loss became non-finite (NaN/Inf) at step 23",
    ),
    "critic_loss": (  # (one critic step per model step: its 23rd call is step 23's)
        lambda mp: _poison_loss(mp, VariationalDivergence, "critic_loss", 23),
        ["objective=gan", "trainer.critic_steps=1"],
        "the critic_loss became non-finite (NaN/Inf) at step 23",
    ),
    "parameter": (
        lambda mp: _poison_parameter(mp, 23),
        [],
        "the loss became non-finite (NaN/Inf) at step 23",
    ),
}


@pytest.mark.parametrize(
    "where",
    [w if w != "parameter" else pytest.param(w, marks=slow) for w in NON_FINITE],
)
def test_non_finite_values_stop_with_exit_3_and_keep_the_last_good_checkpoint(
    gandiv, tmp_path, monkeypatch, where
):
    poison, args, message = NON_FINITE[where]
    poison(monkeypatch)
    result = gandiv("train", "trainer.checkpoint_every=10", "trainer.log_every=5", *args, *TINY[1:])
    assert result.code == 3
    assert f"gandiv train: error: {message}" in result.err
    assert "Traceback" not in result.err and result.err.count("\n") == 1
    run = only_run(tmp_path)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "failed" and message in summary["error"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    critic = [v for v in state["objective"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in critic)
    logged = [line["step"] for line in metrics_without_time(run)]
    assert logged and max(logged) <= 20  # nothing from the broken steps was logged


# ------------------------------------------------------------------------------------------------
# Two runs started at the same moment never share a directory
@slow
def test_runs_started_in_the_same_microsecond_get_their_own_directories(
    gandiv, tmp_path, monkeypatch
):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2030, 1, 2, 3, 4, 5, 678901)

    monkeypatch.setattr("hydra.core.utils.datetime", Frozen)
    for seed in (0, 1):
        assert gandiv("train", *TINY, "plot.every=0", f"trainer.seed={seed}").code == 0
    first, second = run_dirs(tmp_path)
    assert (first.name, second.name) == ("03-04-05-678901", "03-04-05-678901-1")
    for seed, run in enumerate((first, second)):
        assert f"trainer.seed={seed}" in (run / ".hydra" / "overrides.yaml").read_text()
        assert read_json(run / "summary.json")["status"] == "completed"
    assert metrics_without_time(first) != metrics_without_time(second)


@slow
def test_runs_started_together_in_one_output_root_keep_apart(tmp_path):
    procs = [_start(tmp_path, *TINY, "plot.every=0") for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    runs = run_dirs(tmp_path)
    assert len(runs) == 3
    for run in runs:
        assert read_json(run / "summary.json")["status"] == "completed"
        assert len(metrics_without_time(run)) == len(metrics_without_time(runs[0]))
        assert metrics_without_time(run) == metrics_without_time(runs[0])  # same seed, no mixing


# ------------------------------------------------------------------------------------------------
# A sweep whose job fails mid-training keeps every other job's results
@slow
def test_a_job_failing_mid_training_leaves_the_other_jobs_complete(gandiv, tmp_path, monkeypatch):
    real_loop = train_command.train_loop

    def loop_breaking_seed_1(task: Any, **kwargs: Any) -> Any:
        if task.config["trainer"]["seed"] == 1:
            original = task.objective.model_loss
            calls = {"n": 0}

            def poisoned(*args: Any) -> torch.Tensor:
                calls["n"] += 1
                return original(*args) * (float("nan") if calls["n"] == 15 else 1.0)

            task.objective.model_loss = poisoned
        return real_loop(task, **kwargs)

    monkeypatch.setattr(train_command, "train_loop", loop_breaking_seed_1)
    result = gandiv("train", "-m", "trainer.seed=0,1,2", "trainer.checkpoint_every=10", *TINY)
    assert result.code == 3, result.err
    assert "Traceback" not in result.err
    assert "job 1 failed: the loss became non-finite (NaN/Inf) at step 15" in result.err
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/*/.hydra"))
    assert [j.name for j in jobs] == ["0", "1", "2"]
    for job in (jobs[0], jobs[2]):
        summary = read_json(job / "summary.json")
        assert summary["status"] == "completed" and summary["steps"] == 40
        assert (job / "samples.npy").is_file() and (job / "animation.gif").is_file()
        assert metrics_without_time(job)[-1]["step"] == 40
    failed = read_json(jobs[1] / "summary.json")
    assert failed["status"] == "failed" and "step 15" in failed["error"]
    assert torch.load(jobs[1] / "checkpoints" / "last.pt", weights_only=True)["step"] == 10


# ------------------------------------------------------------------------------------------------
# Determinism on CPU
@slow
def test_same_seed_gives_identical_metrics(gandiv, tmp_path):
    for _ in range(2):
        assert gandiv("train", "objective=reverse_kl", *TINY).code == 0
    first, second = run_dirs(tmp_path)
    assert metrics_without_time(first) == metrics_without_time(second)
    states = final_model_state(first), final_model_state(second)
    assert all(torch.equal(value, states[1][key]) for key, value in states[0].items())
    assert gandiv("train", "objective=reverse_kl", "trainer.seed=1", *TINY).code == 0
    third = run_dirs(tmp_path)[-1]
    assert metrics_without_time(third) != metrics_without_time(first)
