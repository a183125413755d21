"""Data-parallel training under torchrun: gloo on the CPU, 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from gandiv.errors import UserError
from gandiv.training import distributed as D

from .celeba_copy import images, make_copy, write_faces
from .conftest import metrics_without_time, read_json, run_cli, run_dirs

WORLD = 2


def _replicas(rank: int, store_path: str, out: str) -> None:
    """One of two processes: averages gradients, broadcasts state, saves a checkpoint."""
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD)
    D._control = dist.new_group(backend="gloo")
    ranks = D.current()
    torch.manual_seed(rank)  # different replicas until rank 0's state is broadcast
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    D.replicate(ranks, (model,), optimizer, None)
    started = list(map(torch.clone, model.parameters()))
    for p in model.parameters():
        p.grad = torch.full_like(p, float(rank + 1))  # the mean over the ranks is 1.5
    model(torch.randn(5, 3))  # this rank's running statistics
    optimizer.step()
    moved = [
        (s - p.detach()).unique().tolist() for s, p in zip(started, model.parameters(), strict=True)
    ]
    run = D.run_directory(Path(out), ranks)
    state = {"step": 1, "model": model.state_dict(), "objective": {}, "generator": rank}
    run.save_checkpoint({**state, "torch_rng": rank, "splits": {}})
    run.append_metrics({"step": 1})
    flat = torch.cat([t.flatten() for t in model.state_dict().values()]).float()
    torch.save({"moved": moved, "state": flat}, f"{out}-rank{rank}.pt")
    try:  # replicas that differ are a bug the checkpoint refuses
        with torch.no_grad():
            model[0].weight.add_(rank)
        run.save_checkpoint({**state, "model": model.state_dict(), "torch_rng": 0, "splits": {}})
    except RuntimeError as err:
        Path(f"{out}-rank{rank}.err").write_text(str(err))
    dist.destroy_process_group()


def test_two_replicas_average_gradients_share_rank_0s_state_and_only_rank_0_writes(
    tmp_path: Path,
):
    out = tmp_path / "run"
    # forked, not spawned: the children need not import torch again (seconds on this machine)
    args = (str(tmp_path / "store"), str(out))
    mp.start_processes(_replicas, args=args, nprocs=WORLD, start_method="fork")
    results = [torch.load(f"{out}-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for result in results:
        assert result["moved"] == [[1.5]] * 4  # lr 1 × the averaged gradient, every parameter
    torch.testing.assert_close(results[0]["state"], results[1]["state"], rtol=0, atol=0)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == WORLD
    assert [r["generator"] for r in state["ranks"]] == [0, 1]
    assert len({r["digest"] for r in state["ranks"]}) == 1
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'  # once, by rank 0
    assert "the replicas differ at step 1" in Path(f"{out}-rank0.err").read_text()
    assert not Path(f"{out}-rank1.err").exists()  # (rank 1 only contributes its state)


def test_a_resume_takes_this_ranks_state_and_needs_as_many_processes():
    ranks = [{"generator": torch.tensor([r]), "torch_rng": r, "splits": {"r": r}} for r in (0, 1)]
    state = {"step": 3, "world_size": 2, "ranks": ranks, **ranks[0]}
    mine = D.rank_checkpoint(state, D.Ranks(1, 2))
    assert mine["torch_rng"] == 1 and mine["splits"] == {"r": 1} and mine["step"] == 3
    with pytest.raises(UserError, match=r"trained by 2 process\(es\) .* this resume has 1"):
        D.rank_checkpoint(state, D.Ranks(0, 1))
    single = {"step": 3, "generator": torch.tensor([0])}
    assert D.rank_checkpoint(single, D.Ranks()) is single
    with pytest.raises(UserError, match="one process"):
        D.rank_checkpoint(single, D.Ranks(0, 2))
    assert D.rank_seed(5, D.Ranks(0, 2)) == 5 != D.rank_seed(5, D.Ranks(1, 2))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-m", "trainer.seed=0,1"], "-m: a sweep cannot run under torchrun"),
        (["plot", "run={run}"], "torchrun: gandiv plot runs in one process"),
    ],
)
def test_what_torchrun_cannot_run_is_refused(
    gandiv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], message: str
):
    (tmp_path / "r" / ".hydra").mkdir(parents=True)
    (tmp_path / "r" / ".hydra" / "config.yaml").write_text("{}\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = gandiv(*[a.format(run=tmp_path / "r") for a in args])
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err


def torchrun_command(*args: str) -> list[str]:
    """`torchrun --standalone --nproc_per_node=2 -m gandiv ARGS`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*command, f"--nproc_per_node={WORLD}", "-m", "gandiv", *args]


TORCHRUN_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_command(*args),
        cwd=cwd,
        env=TORCHRUN_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _check_one_run_by_rank_0(run: Path, steps: int) -> dict:
    """The run directory two ranks leave: rank 0's files, once each; replicas that agree."""
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    log = (run / "train.log").read_text()
    assert log.count("done: ") == 1 and log.count("run directory") == 1, log
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["world_size"] == WORLD
    assert summary["steps"] == steps
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD
    assert len({r["digest"] for r in state["ranks"]}) == 1  # identical models on both ranks
    generators = [r["generator"] for r in state["ranks"]]
    assert not torch.equal(*generators)  # each rank its own stream
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(line)["step"] for line in lines})  # no line twice
    return state


TOY = [
    "model=mlp",
    "objective=ns_gan",
    "model.width=16",
    "critic.width=16",
    "trainer.log_every=5",
    "trainer.checkpoint_every=10",
    "trainer.num_samples=200",
    "plot.every=10",
]


@pytest.mark.slow
def test_torchrun_trains_one_toy_run_that_resumes_exactly(tmp_path: Path):
    """Two processes, ~10 s each call here (process and group start-up): one run directory,
    written by rank 0 only; stopped at step 10 and resumed, the same metrics as uninterrupted."""
    result = torchrun("train", *TOY, "trainer.steps=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (whole,) = run_dirs(tmp_path)
    _check_one_run_by_rank_0(whole, 20)
    records = metrics_without_time(whole)
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    single = run_cli("train", *TOY, "trainer.steps=20", "hydra.run.dir=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert files(whole) == files(tmp_path / "single")  # the same result shape as one process
    assert [r.keys() for r in records] == [
        r.keys() for r in metrics_without_time(tmp_path / "single")
    ]

    half = tmp_path / "half"
    result = torchrun("train", *TOY, "trainer.steps=10", f"hydra.run.dir={half}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = torchrun("train", f"resume={half}", "trainer.steps=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert metrics_without_time(half) == records
    assert (half / "train.log").read_text().count("resuming") == 1


@pytest.mark.slow
def test_torchrun_trains_a_dcgan_image_run(tmp_path: Path):
    make_copy(write_faces(tmp_path / "faces"), tmp_path / "data", "torchvision")
    args = images(tmp_path / "data", "objective=ns_gan", "trainer.steps=6", "trainer.log_every=3")
    args += ["plot.every=3", "trainer.num_samples=16"]
    result = torchrun("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path)
    state = _check_one_run_by_rank_0(run, 6)
    assert any("running_mean" in k for k in state["model"])  # BatchNorm buffers agree too
    assert [r["step"] for r in metrics_without_time(run)] == [3, 6]
    assert (run / "figures" / "samples.png").is_file()


@pytest.mark.slow
def test_sigterm_to_torchrun_checkpoints_every_rank_at_one_step_and_the_run_resumes(
    tmp_path: Path,
):
    run = tmp_path / "run"
    args = [*TOY, "trainer.steps=1000000", "trainer.checkpoint_every=0", "plot.every=0"]
    with subprocess.Popen(
        torchrun_command("train", *args, f"hydra.run.dir={run}"),
        cwd=tmp_path,
        env=TORCHRUN_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").stat().st_size:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "interrupted" and summary["signal"] == signal.SIGTERM
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert len({r["digest"] for r in state["ranks"]}) == 1  # both ranks stopped at one step
    stopped = int(state["step"])
    result = torchrun("train", f"resume={run}", f"trainer.steps={stopped + 10}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _check_one_run_by_rank_0(run, stopped + 10)


def test_a_signal_caught_during_the_ranks_agreement_stops_the_run_at_the_next_step(
    gandiv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Ranks spend most of a step waiting in collectives, the agreement on a stop signal among
    them: a SIGTERM handled while it is under way must not be overwritten by its result (it
    was, about one torchrun SIGTERM in 14, and training went on until torchrun killed it)."""
    calls = []

    def agree(signum: int | None) -> int | None:  # one rank's view: nobody had caught one yet
        calls.append(signum)
        if len(calls) == 20:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the result is stored
        return signum

    monkeypatch.setattr("gandiv.commands.train.agree_signal", agree)
    result = gandiv("train", *TOY, "trainer.steps=200", "trainer.checkpoint_every=0")
    assert result.code == 143, result.err
    (run,) = run_dirs(tmp_path)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "interrupted" and summary["signal"] == signal.SIGTERM
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 21
    assert calls[-1] == signal.SIGTERM  # agreed on at the next step
