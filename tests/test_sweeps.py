"""Sweeps: launchers (joblib, submitit), failure isolation, seed summaries, requeues."""

from __future__ import annotations

import csv
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gandiv import cli
from gandiv.training.run_dir import RunDirectory

from .conftest import TINY, metrics_without_time, only_run, read_json, run_cli


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _sweep_root(tmp_path: Path) -> Path:
    (root,) = tmp_path.glob("multirun/*/*")
    return root


def test_a_sweep_gives_the_same_numbers_whichever_launcher_runs_it(gandiv, tmp_path):
    # (joblib's worker processes outlive one call and keep their working directory: in-process
    # calls give absolute sweep directories)
    args = ["trainer.seed=3,4", "plot.every=0", *TINY]
    assert gandiv("train", "-m", "hydra.sweep.dir=basic", *args).code == 0
    par = f"hydra.sweep.dir={tmp_path / 'par'}"
    assert gandiv("train", "-m", par, "hydra/launcher=joblib", *args).code == 0
    for job in ("0", "1"):
        assert metrics_without_time(tmp_path / "basic" / job) == metrics_without_time(
            tmp_path / "par" / job
        )


def test_seed_sweep_gets_mean_and_std_per_setting(gandiv, tmp_path):
    result = gandiv(
        "train", "-m", "trainer.seed=range(2)", "objective=forward_kl,reverse_kl", *TINY
    )
    assert result.code == 0, result.err
    root = _sweep_root(tmp_path)
    rows = _rows(root / "sweep.csv")
    assert len(rows) == 4 and {r["trainer.seed"] for r in rows} == {"0", "1"}
    table = {r["objective"]: r for r in _rows(root / "seeds.csv")}
    assert set(table) == {"forward_kl", "reverse_kl"}
    for objective, entry in table.items():
        values = [float(r["kl_qp"]) for r in rows if r["objective"] == objective]
        assert len(set(values)) == 2  # the seeds differ
        assert entry["runs"] == "2" and entry["ok"] == "2"
        assert float(entry["kl_qp_mean"]) == pytest.approx(statistics.fmean(values), abs=1e-6)
        assert float(entry["kl_qp_std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert "trainer.seed" not in table["forward_kl"]


def test_sweep_summarize_rebuilds_the_summary_of_a_copied_sweep(gandiv, tmp_path, capsys):
    assert gandiv("train", "-m", "trainer.seed=0,1", *TINY).code == 0
    root = _sweep_root(tmp_path)
    written = {name: (root / name).read_bytes() for name in ("sweep.csv", "seeds.csv")}
    for name in ("sweep.csv", "seeds.csv", "sweep.png"):
        (root / name).unlink()
    result = gandiv("sweep", "summarize", str(root))
    assert result.code == 0, result.err
    assert "2 jobs, 2 completed" in result.out
    assert {name: (root / name).read_bytes() for name in written} == written
    assert (root / "sweep.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep"], "usage: gandiv sweep summarize DIR"),
        (["sweep", "tally", "x"], "usage: gandiv sweep summarize DIR"),
        (["sweep", "summarize", "nowhere"], "nowhere: not a gandiv sweep directory"),
        (["train", "-m", "trainer.seed=0,1", "--cfg", "job"], "-m: cannot be combined with --cfg"),
        (
            ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_job=2"],
            "hydra.launcher.n_job: unknown key",
        ),
        (
            ["train", "-m", "hydra/launcher=slurm"],
            "hydra/launcher=slurm: unknown option; choose one of: basic, joblib, submitit_local, "
            "submitit_slurm",
        ),
    ],
)
def test_bad_sweep_input_is_one_line(gandiv, tmp_path, args, message):
    result = gandiv(*args)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "multirun").exists()


def test_a_launcher_without_its_plugin_says_how_to_install_it(gandiv, tmp_path, monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("hydra_plugins.") else real(name, *a),
    )
    result = gandiv("train", "-m", "hydra/launcher=submitit_slurm", "trainer.seed=0,1")
    assert result.code == 2
    assert result.err.strip() == (
        "gandiv train: error: hydra/launcher: submitit_slurm needs the launcher plugins: "
        "pip install 'gandiv[sweep]' (`make install` includes them)"
    )


def test_slurm_launcher_settings_are_overridable(gandiv):
    result = gandiv(
        "train",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.array_parallelism=8",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    )
    assert result.code == 0, result.err
    for line in ("partition: gpu", "timeout_min: 30", "gpus_per_node: 1", "array_parallelism: 8"):
        assert line in result.out
    assert "SlurmLauncher" in result.out and "max_num_timeout: 10" in result.out


def _start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`gandiv ARGS...` in a subprocess that runs on while the test watches it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "gandiv", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    """A PATH where `srun` exists and `sbatch` keeps the script it is given rather than run it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\necho "Submitted batch job 4242"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    capture = tmp_path / "submitted.sh"
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_CAPTURE": str(capture)}


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script sbatch")
def test_the_readme_slurm_example_submits_one_array_job_with_its_settings(tmp_path):
    env = _fake_slurm(tmp_path)
    process = _start_cli(
        "train",
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=1",
        "hydra.launcher.cpus_per_task=4",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.array_parallelism=2",
        "hydra.sweep.dir=sw",
        "objective=js_pi",
        "objective.pi=0.1,0.5,0.9",
        "trainer.seed=range(2)",
        cwd=tmp_path,
        env=env,
    )
    capture = Path(env["SBATCH_CAPTURE"])
    deadline = time.monotonic() + 120
    try:
        while not capture.is_file():  # then it waits for SLURM to run the jobs: stop it
            assert process.poll() is None and time.monotonic() < deadline, process.stdout
            time.sleep(0.05)
    finally:
        process.kill()
        process.communicate()
    script = capture.read_text().splitlines()
    for line in (
        "#SBATCH --array=0-5%2",  # 3 values of pi x 2 seeds, 2 at a time
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",  # the preemption/time-out signal gandiv checkpoints on
    ):
        assert line in script, line
    assert any("submitit.core._submit" in line and "/sw/.submitit/" in line for line in script)


def test_slurm_launcher_on_a_machine_without_slurm_says_so(gandiv, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = gandiv("train", "-m", "hydra/launcher=submitit_slurm", "trainer.seed=0,1")
    assert result.code == 2 and "this machine has no srun" in result.err
    assert len(result.err.strip().splitlines()) == 1


def _send_when_training(path: Path, signum: int) -> threading.Thread:
    """Send `signum` to this process once the run at `path` has logged its first metrics line."""

    def send() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().count("\n") >= 2:
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_requeued_job_resumes_where_the_scheduler_stopped_it(gandiv, tmp_path, monkeypatch):
    """The scheduler's preemption handler (as submitit installs it) runs after gandiv's checkpoint;
    the job started again in the same directory continues it exactly."""
    args = ["trainer.steps=1500", "trainer.log_every=10", "trainer.eval_every=500", "plot.every=0"]
    steps_at_signal: list[int] = []
    job = tmp_path / "sw" / "0"

    def requeue(signum: int, frame: object) -> None:  # what a scheduler does: requeue and exit
        steps_at_signal.append(RunDirectory(job).load_checkpoint()["step"])
        raise SystemExit(99)

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        thread = _send_when_training(job / "metrics.jsonl", signal.SIGUSR2)
        result = gandiv("train", "-m", "hydra.sweep.dir=sw", "trainer.seed=5", *args)
        thread.join()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert result.code == 99
    (stopped,) = steps_at_signal
    assert 10 <= stopped < 1500 and not (job / "summary.json").exists()

    result = gandiv("train", "-m", "hydra.sweep.dir=sw", "trainer.seed=5", *args)  # the requeue
    assert result.code == 0, result.err
    assert "resuming" in (job / "train.log").read_text()
    assert gandiv("train", "-m", "hydra.sweep.dir=ref", "trainer.seed=5", *args).code == 0
    reference = tmp_path / "ref" / "0"
    assert metrics_without_time(job) == metrics_without_time(reference)
    resumed = torch.load(job / "checkpoints" / "last.pt", weights_only=True)["model"]
    alone = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(resumed[k], alone[k]) for k in alone)


def test_a_signal_a_scheduler_ignores_lets_training_go_on(gandiv, tmp_path):
    """Under submitit SIGTERM is ignored (the preemption signal follows): gandiv checkpoints and
    carries on instead of exiting 143."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    args = ["trainer.steps=1000", "trainer.log_every=10", "plot.every=0", "hydra.sweep.dir=sw"]
    try:
        thread = _send_when_training(tmp_path / "sw" / "0" / "metrics.jsonl", signal.SIGTERM)
        result = gandiv("train", "-m", *args)
        thread.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.code == 0, result.err
    assert seen == [signal.SIGTERM]
    assert read_json(tmp_path / "sw" / "0" / "summary.json")["steps"] == 1000


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the job's process in /proc")
def test_submitit_local_sweep_requeues_a_preempted_job_which_resumes(tmp_path):
    """Two identical jobs (they differ only in the number of samples saved at the end); job 0 is
    sent submitit's preemption signal mid-training, is requeued, and ends identical to job 1."""
    process = _start_cli(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.sweep.dir=sw",
        "trainer.steps=6000",
        "trainer.log_every=200",
        "trainer.eval_every=3000",
        "plot.every=0",
        "trainer.num_samples=500,501",
        cwd=tmp_path,
    )
    sweep = tmp_path / "sw"
    metrics = sweep / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "job 0 never started"
        time.sleep(0.02)
    (log,) = [p for p in sweep.glob(".submitit/*/*_0_log.out") if "/sw/0:" in p.read_text()]
    (task,) = _children(int(log.parent.name))  # the submitit job id is its controller's pid
    os.kill(task, signal.SIGUSR2)
    out, _ = process.communicate(timeout=480)
    assert process.returncode == 0, out
    log_text = log.read_text()
    assert "this job is preempted" in log_text and "Requeued job" in log_text
    assert "resuming" in (sweep / "0" / "train.log").read_text()
    assert metrics_without_time(sweep / "0") == metrics_without_time(sweep / "1")
    assert [r["status"] for r in _rows(sweep / "sweep.csv")] == ["ok", "ok"]


def test_joblib_sweep_runs_its_jobs_in_worker_processes_and_isolates_a_failing_one(tmp_path):
    """What a user types, end to end: exit code, one line naming the failed job, sweep.csv."""
    result = run_cli(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "objective=fgan",
        "objective.divergence=kl,js,bogus,pearson",
        "plot.every=0",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "gandiv train: error: failed jobs: 2 (the others finished; see sweep.csv)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stdout
    root = _sweep_root(tmp_path)
    rows = _rows(root / "sweep.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]
    assert rows[2]["exit_code"] == "2" and "objective.divergence" in rows[2]["error"]
    for job in ("0", "1", "3"):
        summary = read_json(root / job / "summary.json")
        assert summary["status"] == "completed" and summary["steps"] == 40
    assert rows[0]["kl_pq"] == str(read_json(root / "0" / "summary.json")["kl_pq"])


def test_sigterm_stops_the_whole_sweep_with_its_exit_code(gandiv, tmp_path):
    args = ["trainer.steps=3000", "trainer.log_every=10", "plot.every=0", "hydra.sweep.dir=sw"]
    thread = _send_when_training(tmp_path / "sw" / "0" / "metrics.jsonl", signal.SIGTERM)
    result = gandiv("train", "-m", "trainer.seed=0,1", *args)
    thread.join()
    assert result.code == 143, result.err
    assert read_json(tmp_path / "sw" / "0" / "summary.json")["status"] == "interrupted"
    assert not (tmp_path / "sw" / "1").exists()  # the next job never started


def test_a_sweep_run_again_into_its_directory_keeps_the_completed_jobs(gandiv, tmp_path):
    args = ["trainer.seed=0,1", "hydra.sweep.dir=sw", "plot.every=0", *TINY]
    assert gandiv("train", "-m", *args).code == 0
    kept = {p: p.read_bytes() for p in (tmp_path / "sw").glob("*/*") if p.is_file()}
    kept = {p: b for p, b in kept.items() if p.name in ("metrics.jsonl", "summary.json")}
    result = gandiv("train", "-m", *args)
    assert result.code == 0, result.err
    assert "this job already completed; kept as it is" in (tmp_path / "sw/1/train.log").read_text()
    assert len(kept) == 4 and all(p.read_bytes() == b for p, b in kept.items())
    assert [r["status"] for r in _rows(tmp_path / "sw" / "sweep.csv")] == ["ok", "ok"]


def test_a_spread_sweep_tabulates_and_draws_the_spread_ground_truth(gandiv, tmp_path):
    result = gandiv(
        "train",
        "-m",
        "dataset=line",
        "model=linear",
        "objective=spread",
        "objective.sigma=0.2,0.4",
        "hydra.sweep.dir=sw",
        "plot.every=0",
        *TINY,
    )
    assert result.code == 0, result.err
    rows = _rows(tmp_path / "sw" / "sweep.csv")
    for row in rows:
        summary = read_json(tmp_path / "sw" / row["job"] / "summary.json")
        assert float(row["spread_kl_pq"]) == summary["spread_kl_pq"] > 0
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 10_000


def test_instance_noise_options_without_noise_are_reported_as_ignored(gandiv, tmp_path):
    result = gandiv("train", "objective=gan", "model=mlp", "objective.sigma=0.5", *TINY)
    assert result.code == 0, result.err
    log = (only_run(tmp_path) / "train.log").read_text()
    assert "ignored: objective.sigma=0.5 (objective.noise=none adds no instance noise" in log
