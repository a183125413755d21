"""Which run directory a command works in, decided from its arguments before Hydra starts.

- A fresh run never writes into a directory that already holds a run
  (`refuse_existing_run_dir`), and claims its own with an exclusive `mkdir` (`ClaimRunDir`, the
  Hydra callback of conf/train.yaml), so two runs started at once never share one.
- ``resume=DIR`` becomes the run's own overrides, then the new ones, in DIR (`resume_args`),
  after checking that DIR is a gandiv run with a checkpoint and a still valid config.
- ``run=DIR`` of `gandiv eval`/`gandiv plot` must name a run (eval: or a sweep) (`run_args`).
- Under torchrun, the ranks other than 0 join rank 0's run and write nothing (`join_torchrun`).

Separate from `gandiv.cli`'s dispatch and error reporting; like it, this imports no torch at
import time (``--help`` and completion stay fast).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from gandiv.errors import UserError, first_line

if TYPE_CHECKING:  # (imported where used: it imports torch)
    from gandiv.training.distributed import Ranks


def arg_value(args: Sequence[str], key: str) -> str | None:
    """The value of `key=VALUE` among the overrides (the last one wins, as in Hydra)."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{key}=")]
    return values[-1] if values else None


def informational(args: Sequence[str]) -> bool:
    flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion"}
    return any(arg in flags or arg == "-sc" for arg in args)


def refuse_existing_run_dir(args: Sequence[str]) -> None:
    """A fresh run never writes into a directory that already holds a run."""
    chosen = arg_value(args, "hydra.run.dir")
    if chosen is None or "-m" in args or "--multirun" in args:
        return
    path = Path(chosen)
    if any((path / name).exists() for name in (".hydra", "checkpoints", "metrics.jsonl")):
        raise UserError(
            "hydra.run.dir",
            f"'{chosen}' already holds a run; continue it with resume={chosen} or choose a new "
            "directory",
        )


class ClaimRunDir(Callback):
    """Hydra callback: claim a fresh run's directory with an exclusive `mkdir` before Hydra writes
    into it, so two runs started in the same microsecond never share one (the later one takes the
    next free ``-N`` suffix). A directory the user names (`hydra.run.dir=`, `resume=`) is theirs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if any(str(o).startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra):
            return
        if torchrun_ranks() is not None:  # rank 0 claims the directory, every rank uses it
            from gandiv.training.distributed import current, share_from_main

            path = self._claim(str(config.hydra.run.dir)) if current().main else None
            with read_write(config.hydra.run):
                config.hydra.run.dir = share_from_main(path)
            return
        with read_write(config.hydra.run):
            config.hydra.run.dir = self._claim(str(config.hydra.run.dir))

    @staticmethod
    def _claim(base: str) -> str:
        """Create `base` (or the first free `base-N`) exclusively; return its path."""
        Path(base).parent.mkdir(parents=True, exist_ok=True)
        path, suffix = base, 0
        while True:
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                suffix += 1
                path = f"{base}-{suffix}"


def torchrun_ranks() -> Ranks | None:
    """This process's `Ranks` when torchrun started several processes (None: one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from gandiv.training.distributed import launched_ranks

    return launched_ranks()


def join_torchrun(command: str, args: list[str]) -> list[str]:
    """Under torchrun: join the other processes of the training run. The ranks other than 0
    write nothing: no .hydra/, no train.log, and rank 0's run directory."""
    if informational(args):
        return args
    if command != "train":
        raise UserError(
            "torchrun", f"gandiv {command} runs in one process; start it without torchrun"
        )
    if "-m" in args or "--multirun" in args:
        raise UserError(
            "-m", "a sweep cannot run under torchrun; sweep without it, one process per job"
        )
    from gandiv.training.distributed import start

    if start().main:
        return args
    return [*args, "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def refuse_read_only(key: str, path: Path, then: str) -> None:
    """A command that writes into an existing run (or sweep) refuses one it cannot write: the
    directory, or a file or folder in it, is read-only."""
    for folder, names, files in os.walk(path):
        for entry in [folder, *(os.path.join(folder, n) for n in (*names, *files))]:
            if not os.path.islink(entry) and not os.access(entry, os.W_OK):
                raise UserError(
                    key,
                    f"'{entry}' is read-only; make the run writable (chmod -R u+w '{path}') "
                    f"to {then}",
                )


def resume_args(args: list[str]) -> list[str]:
    """`resume=DIR`: reuse the run's own overrides, continue in DIR, keep its .hydra/ intact."""
    run = arg_value(args, "resume")
    if informational(args):
        return args
    if run is None:
        refuse_existing_run_dir(args)
        return args
    if "-m" in args or "--multirun" in args:
        raise UserError("resume", "cannot be combined with -m/--multirun; resume one run at a time")
    path = Path(run)
    if not path.is_dir():
        raise UserError("resume", f"'{run}' is not a directory; give a run directory to continue")
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError("resume", f"'{run}' is not a gandiv run directory (no {overrides_file})")
    if not (path / "checkpoints" / "last.pt").is_file():
        raise UserError("resume", f"'{run}' has no checkpoints/last.pt to resume from")
    from gandiv.config import load_train_config

    load_train_config(path / ".hydra" / "config.yaml")  # a gandiv run's, still valid
    refuse_read_only("resume", path, "continue it")
    try:
        original = [str(o) for o in OmegaConf.load(overrides_file)]
    except Exception as err:
        raise UserError(str(overrides_file), f"unreadable ({first_line(str(err))})") from None
    original = [o for o in original if not o.startswith("resume=")]
    return [*original, *args, f"hydra.run.dir={path}", "hydra.output_subdir=null"]


def run_args(command: str, args: list[str]) -> list[str]:
    """`eval`/`plot`: `run=DIR` must name a run directory (or, for eval, a sweep of runs)."""
    if informational(args):
        return args
    run = arg_value(args, "run")
    if run is None:
        raise UserError("run", f"missing; usage: gandiv {command} run=DIR")
    path = Path(run)
    then = "evaluate it" if command == "eval" else "draw its figures"
    if (path / ".hydra" / "config.yaml").is_file():
        refuse_read_only("run", path, then)
        return args
    if command == "eval" and path.is_dir() and any(path.glob("*/.hydra/config.yaml")):
        refuse_read_only("run", path, then)
        return args
    what = "run or sweep directory" if command == "eval" else "run directory"
    raise UserError("run", f"'{run}' is not a gandiv {what} (no .hydra/config.yaml)")
