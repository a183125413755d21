"""One writer per run, history never rewritten, any path, no litter (README: "Guarantees").

- A finished run or sweep job is never rewritten by a later command with another config: a sweep
  run again into its directory with a key changed is refused before anything is written; a resume
  refuses a checkpoint it cannot continue from (non-finite parameters, an impossible step), and
  another `hydra.run.dir`, before anything is written.
- A run directory (a sweep's root) has one writer at a time: a second `gandiv train`, resume, eval
  or plot is refused at once, naming the PID of the process that holds it. The holder here is the
  test process itself, through the same lock, and the second writer a real `gandiv` process.
- No run or sweep is made inside a run, a job or a sweep.
- Paths with spaces and non-ASCII characters work for `hydra.run.dir`, `run=` and `resume=`.
- A refused command leaves no directory (no empty outputs/DATE/) and a refused sweep no
  multirun.yaml; temporary files of killed writers are removed by the next write; the checkpoint
  before the last (`prev.pt`) is kept, and a resume falls back to it when `last.pt` is damaged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gandiv.training.locks import LOCK_NAME, lock_directory, release_lock
from gandiv.training.run_dir import atomic_write, atomic_write_bytes

from ..conftest import digest, metrics_without_time, read_json, run_cli
from .conftest import copy_run
from .test_bad_input import EXISTING

SHORT = ["trainer.steps=20", "trainer.log_every=10", "trainer.num_samples=100", "plot.every=0"]
# gandiv eval at a small cost
QUICK_EVAL = [
    "eval.critic.divergences=[js]",
    "eval.critic.steps=5",
    "eval.critic.model_samples=1000",
    "eval.num_samples=200",
    "eval.nearest=[kl]",
]


def _edit_checkpoint(run: Path, edit: Callable[[dict], dict]) -> None:
    path = run / "checkpoints" / "last.pt"
    torch.save(edit(torch.load(path, weights_only=True)), path)


def _nan_model(state: dict) -> dict:
    model = dict(state["model"])
    name = next(iter(model))
    model[name] = torch.full_like(model[name], float("nan"))
    return {**state, "model": model}


def _dead_pid() -> int:
    """A process id no process has now."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def _refused(result, program: str, *parts: str) -> None:
    """Exit 2 and one line naming what is refused, no traceback."""
    assert result.code == 2, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gandiv {program}: error: "), result.err
    for part in parts:
        assert part in lines[0], (part, lines[0])


# ------------------------------------------------------------------------------------------------
# History is never rewritten
def test_a_sweep_run_again_with_a_changed_key_is_refused_and_rewrites_nothing(gandiv, tmp_path):
    sweep = ["trainer.seed=0,1", *SHORT, "hydra.sweep.dir=sweep"]
    assert gandiv("train", "-m", *sweep).code == 0
    before = digest(tmp_path)
    result = gandiv("train", "-m", *sweep, "trainer.lr=0.5")
    _refused(result, "train", "hydra.sweep.dir", "jobs 0, 1", "trainer.lr differ")
    assert digest(tmp_path) == before  # the jobs' .hydra/, summaries, sweep.csv: all as they were
    # the same sweep again is still welcome: its completed jobs are kept as they are
    assert gandiv("train", "-m", *sweep).code == 0
    assert {k: v for k, v in digest(tmp_path).items() if "train.log" not in k} == {
        k: v for k, v in before.items() if "train.log" not in k
    }


def test_a_resume_of_non_finite_parameters_is_refused_before_anything_is_written(
    gandiv, tmp_path, finished_runs
):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    _edit_checkpoint(run, _nan_model)
    before = digest(tmp_path)
    result = gandiv("train", f"resume={run}", "trainer.steps=80")
    _refused(result, "train", "checkpoints/last.pt: holds non-finite values (model ")
    assert digest(tmp_path) == before


@pytest.mark.parametrize("step", [-1, 10**9, 2.5])
def test_a_resume_of_a_checkpoint_with_an_impossible_step_is_refused(
    gandiv, tmp_path, finished_runs, step
):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    _edit_checkpoint(run, lambda state: {**state, "step": step})
    before = digest(tmp_path)
    result = gandiv("train", f"resume={run}", "trainer.steps=80")
    _refused(result, "train", f"checkpoints/last.pt: records step {step!r}, which its run of 40")
    assert digest(tmp_path) == before


def test_a_resume_into_another_directory_is_refused(gandiv, tmp_path, finished_runs):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    before = digest(tmp_path)
    result = gandiv("train", f"resume={run}", "trainer.steps=80", "hydra.run.dir=elsewhere")
    _refused(result, "train", "hydra.run.dir: a resumed run continues in its own directory")
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# One writer per run directory
@pytest.mark.parametrize(
    "command",
    [
        ["train", "hydra.run.dir={fresh}", *SHORT],
        ["train", "resume={run}", "trainer.steps=80"],
        ["eval", "run={run}", *QUICK_EVAL],
        ["plot", "run={run}"],
        ["train", "-m", "trainer.seed=0,1", *SHORT, "hydra.sweep.dir={fresh}"],
    ],
    ids=["train", "resume", "eval", "plot", "sweep"],
)
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, finished_runs, command):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    held = fresh if any("{fresh}" in arg for arg in command) else run
    lock_directory(held)  # this process writes there now
    try:
        before = digest(tmp_path)
        args = [a.replace("{run}", str(run)).replace("{fresh}", str(fresh)) for a in command]
        result = run_cli(*args, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert f"in use by another gandiv process (PID {os.getpid()})" in lines[0]
        assert digest(tmp_path) == before
    finally:
        release_lock(held)
    assert not (held / LOCK_NAME).exists()


def test_eval_of_a_sweep_is_refused_while_one_of_its_jobs_is_written(tmp_path, finished_runs):
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        copy_run(finished_runs["gaussian"], sweep / job)
    lock_directory(sweep / "1")
    try:
        before = digest(tmp_path)
        result = run_cli("eval", f"run={sweep}", *QUICK_EVAL, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr
        assert f"1: in use by another gandiv process (PID {os.getpid()})" in result.stderr
        assert digest(tmp_path) == before  # no job evaluated, no eval.csv
    finally:
        release_lock(sweep / "1")


def test_two_trains_started_together_into_one_directory_leave_one_run(tmp_path):
    """Whichever comes first, the other is refused (by the lock, or by the run it finds)."""
    args = [sys.executable, "-m", "gandiv", "train", *SHORT, "hydra.run.dir=same"]
    both = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in both]  # type: ignore[union-attr]
    assert sorted(code for code, _ in results) == [0, 2], results
    (refusal,) = [err for code, err in results if code == 2]
    assert len(refusal.splitlines()) == 1
    assert "in use by another gandiv process" in refusal or "already holds a run" in refusal
    steps = [r["step"] for r in metrics_without_time(tmp_path / "same")]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # one run's log, no line twice


def test_the_lock_is_released_when_the_command_ends(gandiv, tmp_path, finished_runs):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    assert gandiv("plot", f"run={run}").code == 0
    assert not (run / LOCK_NAME).exists()
    lock_directory(run)  # free again
    release_lock(run)


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("hydra.run.dir={run}/inner", "run"),
        ("hydra.run.dir={run}/figures/inner", "run"),
        ("hydra.run.dir={sweep}/0/inner", "run"),
        ("hydra.run.dir={sweep}/other", "sweep"),
        ("hydra.sweep.dir={run}/sweep", "run"),
        ("hydra.sweep.dir={sweep}/inner", "sweep"),
    ],
)
def test_no_run_or_sweep_is_made_inside_a_run_a_job_or_a_sweep(
    gandiv, tmp_path, finished_runs, where, kind
):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    sweep = tmp_path / "sweep"
    copy_run(finished_runs["gaussian"], sweep / "0")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    before = digest(tmp_path)
    target = where.replace("{run}", str(run)).replace("{sweep}", str(sweep))
    multirun = ["-m", "trainer.seed=0,1"] if target.startswith("hydra.sweep") else []
    result = gandiv("train", *multirun, *SHORT, target)
    key = target.split("=")[0]
    _refused(result, "train", f"{key}: ", f"lies inside the {kind} ")
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------------------------------
# Paths with spaces and non-ASCII characters
def test_a_run_in_a_path_with_spaces_and_accents_is_reached_by_eval_plot_and_resume(
    gandiv, tmp_path
):
    """Each path as typed (the shell's quotes gone) and quoted for Hydra's grammar."""
    path = tmp_path / "my runs" / "é à"
    typed, quoted = str(path), f"'{path}'"
    assert gandiv("train", *SHORT, f"hydra.run.dir={typed}").code == 0
    assert (path / "summary.json").is_file()
    result = gandiv("eval", f"run={quoted}", *QUICK_EVAL)
    assert result.code == 0, result.err
    assert (path / "eval.json").is_file()
    result = gandiv("plot", f"run={typed}")
    assert result.code == 0, result.err
    result = gandiv("train", f"resume={typed}", "trainer.steps=30")
    assert result.code == 0, result.err
    result = gandiv("train", f"resume={quoted}", "trainer.steps=40")
    assert result.code == 0, result.err
    assert read_json(path / "summary.json")["steps"] == 40
    assert [p.name for p in tmp_path.iterdir()] == ["my runs"]


# ------------------------------------------------------------------------------------------------
# No litter
@pytest.mark.parametrize(
    "args",
    [
        ["trainer.steps=abc"],  # refused while Hydra composes
        ["trainer.steps=0"],  # refused by validation
        ["dataset.n_train=100", "trainer.batch_size=512"],  # refused while building
    ],
)
def test_a_refused_train_leaves_no_directory(gandiv, tmp_path, args):
    assert gandiv("train", *args).code == 2
    assert list(tmp_path.iterdir()) == []


def test_a_refused_sweep_leaves_no_directory_and_no_multirun_yaml(gandiv, tmp_path):
    result = gandiv("train", "-m", "objective=forward_kl,bogus", *SHORT, "hydra.sweep.dir=a/b")
    assert result.code == 2
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(
    gandiv, tmp_path, finished_runs
):
    run = copy_run(finished_runs["gaussian"], tmp_path / EXISTING)
    dead, alive = _dead_pid(), os.getppid()
    litter = [
        run / f".summary.json.tmp-{dead}",
        run / f".eval.json.tmp-{dead}",
        run / f".samples.npy.tmp-{dead}",
        run / "checkpoints" / f".last.pt.tmp-{dead}",
    ]
    another_writer = run / f".summary.json.tmp-{alive}"  # a live process's: not ours to remove
    for path in [*litter, another_writer]:
        path.write_bytes(b"half")
    assert gandiv("train", f"resume={run}", "trainer.steps=60").code == 0
    assert [p for p in litter if p.exists()] == []
    assert another_writer.exists()


def test_an_atomic_write_keeps_the_previous_file_and_leaves_it_on_failure(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "prev.pt"
    atomic_write_bytes(path, b"one")
    atomic_write(path, lambda handle: handle.write(b"two"), keep_previous=previous)
    assert (path.read_bytes(), previous.read_bytes()) == (b"two", b"one")

    def fail(handle):
        handle.write(b"thr")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, fail, keep_previous=previous)
    assert (path.read_bytes(), previous.read_bytes()) == (b"two", b"one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one_exactly(gandiv, tmp_path):
    every = ["trainer.log_every=5", "trainer.eval_every=10", "trainer.checkpoint_every=10"]
    common = ["trainer.num_samples=100", "plot.every=0", *every]
    assert gandiv("train", *common, "trainer.steps=60", "hydra.run.dir=straight").code == 0
    assert gandiv("train", *common, "trainer.steps=40", "hydra.run.dir=broken").code == 0
    broken = tmp_path / "broken"
    checkpoints = broken / "checkpoints"
    assert torch.load(checkpoints / "prev.pt", weights_only=True)["step"] == 30
    last = checkpoints / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = gandiv("train", f"resume={broken}", "trainer.steps=60")
    assert result.code == 0, result.err
    warnings = [line for line in (result.out + result.err).splitlines() if "prev.pt" in line]
    assert len(warnings) == 1 and "continuing from the previous checkpoint" in warnings[0]
    assert "(step 30)" in warnings[0]
    assert metrics_without_time(broken) == metrics_without_time(tmp_path / "straight")
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_the_catalogue_digest_sees_an_empty_directory(tmp_path):
    before = digest(tmp_path)
    (tmp_path / "outputs" / "2000-01-01").mkdir(parents=True)
    assert digest(tmp_path) != before
    shutil.rmtree(tmp_path / "outputs")
    assert digest(tmp_path) == before
