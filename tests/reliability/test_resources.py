"""Exhausted resources: threads beyond the machine's cores, networks and batches beyond its
memory (estimated before anything is allocated), and an allocation that fails mid-training.

The memory cases run the real command in a subprocess under an address-space cap
(`resource.setrlimit(RLIMIT_AS)`), set a little above what the process holds once gandiv is
imported, so they behave alike on any machine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gandiv.commands import runs
from gandiv.errors import out_of_memory

from ..conftest import read_json, run_dirs

# The cap: what the process holds after importing gandiv's commands, plus this much.
HEADROOM_MB = 400

CAPPED = textwrap.dedent(
    """
    import resource, sys
    import gandiv.commands.train, gandiv.commands.evaluate, gandiv.cli
    with open("/proc/self/status") as status:
        held = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmSize:"))
    cap = held + int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from gandiv.cli import main
    main(sys.argv[2:])
    """
)


def _capped(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CAPPED, str(HEADROOM_MB), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line or "Traceback" in line]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_a_run_too_large_for_the_memory_left_is_refused_before_anything_is_written(tmp_path):
    result = _capped(tmp_path, "train", "objective=gan", "critic.width=20000")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert line.startswith("gandiv train: error: critic.width: this needs about ")
    assert "GB of memory (critic.width=20000, critic.depth=" in line
    assert " with trainer.batch_size=512: " in line
    assert "are left under this process's limit (ulimit -v); make critic.width or " in line
    assert run_dirs(tmp_path) == [] and not list(tmp_path.rglob("*.pt"))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_an_allocation_failing_mid_training_exits_2_and_keeps_the_last_checkpoint(tmp_path):
    # the final ground truth on a 4096² grid does not fit under the cap; checkpoints every 10
    # steps of 40 come before it
    result = _capped(
        tmp_path,
        "train",
        "trainer.steps=40",
        "trainer.checkpoint_every=10",
        "trainer.eval_every=0",
        "trainer.grid_points=4096",
        "plot.every=0",
        "hydra.run.dir=run",
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    run = tmp_path / "run"
    assert line.startswith(f"gandiv train: error: {run}: ran out of memory while training (")
    assert f"its last checkpoint ({run}/checkpoints/last.pt) is intact" in line
    assert f"continue with resume={run}" in line
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 30
    summary = read_json(run / "summary.json")
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    # (the checkpoint before it kept as prev.pt; no temporary file left)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "prev.pt"]


def test_threads_beyond_the_cores_are_refused(gandiv, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "machine_cores", lambda: 4)
    result = gandiv("train", "trainer.threads=5")
    assert result.code == 2
    assert result.err == (
        "gandiv train: error: trainer.threads: must be between 1 and 4 (the cores this machine "
        "gives it), got 5\n"
    )
    assert run_dirs(tmp_path) == []


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_an_allocation_failing_in_eval_or_plot_is_one_line_exit_2(
    gandiv, tmp_path, finished_runs, monkeypatch, command
):
    def allocate(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 800000000000 bytes.\nmore"
        )

    monkeypatch.setattr(
        f"gandiv.commands.{'evaluate' if command == 'eval' else 'plot'}.restore", allocate
    )
    result = gandiv(command, f"run={finished_runs['gaussian']}")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.startswith(f"gandiv {command}: error: out of memory ([enforce fail at ")
    assert result.err.count("\n") == 1


def test_out_of_memory_is_told_from_other_errors():
    assert out_of_memory(MemoryError())
    assert out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))


def test_available_memory_takes_the_lower_of_the_machine_and_the_process_limit(monkeypatch):
    values = {"MemAvailable": 8 * 2**30, "VmSize": 1 * 2**30}
    monkeypatch.setattr(runs, "_proc_value", lambda path, field: values[field])
    monkeypatch.setattr(runs.resource, "getrlimit", lambda which: (3 * 2**30, 3 * 2**30))
    assert runs.available_memory() == (2 * 2**30, "left under this process's limit (ulimit -v)")
    unlimited = (runs.resource.RLIM_INFINITY, runs.resource.RLIM_INFINITY)
    monkeypatch.setattr(runs.resource, "getrlimit", lambda which: unlimited)
    assert runs.available_memory() == (8 * 2**30, "available on this machine")


def test_an_allocation_failing_while_the_run_is_built_leaves_no_run_directory(
    gandiv, tmp_path, monkeypatch
):
    def allocate(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr("gandiv.commands.train.build_model", allocate)
    result = gandiv("train", "trainer.steps=20")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.startswith("gandiv train: error: memory: ran out while building the run (")
    assert result.err.count("\n") == 1
    assert run_dirs(tmp_path) == []
