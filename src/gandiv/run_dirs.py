"""Which run directory a command works in, decided from its arguments before Hydra starts.

- A fresh run never writes into a directory that already holds a run
  (`refuse_existing_run_dir`), and claims its own with an exclusive `mkdir` (`ClaimRunDir`, the
  Hydra callback of conf/train.yaml), so two runs started at once never share one.
- ``resume=DIR`` becomes the run's own overrides, then the new ones, in DIR (`resume_args`),
  after checking that DIR is a gandiv run with a checkpoint and a still valid config.
- ``run=DIR`` of `gandiv eval`/`gandiv plot` must name a run (eval: or a sweep) (`run_args`).
- Under torchrun, the ranks other than 0 join rank 0's run and write nothing (`join_torchrun`).
- One process writes a run directory at a time: train (fresh or resumed), eval and plot hold
  its lock (`gandiv.training.locks`), a sweep its root's (`ClaimSweepDir`).
  No run or sweep is created inside another run, job or sweep (`refuse_nested`).
- A sweep run again into a directory whose jobs were trained with another config is refused
  before anything is written (`ClaimSweepDir`); a refused command leaves no directory it made
  (`end_command`).
- Paths with spaces or non-ASCII characters are quoted for Hydra (`quote_paths`).

Separate from `gandiv.cli`'s dispatch and error reporting; like it, this imports no torch at
import time (``--help`` and completion stay fast).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from gandiv.errors import UserError, first_line
from gandiv.training.locks import lock_directory, release_locks

if TYPE_CHECKING:  # (imported where used: it imports torch)
    from gandiv.training.distributed import Ranks


def arg_value(args: Sequence[str], key: str) -> str | None:
    """The value of `key=VALUE` among the overrides (the last one wins, as in Hydra), a quoted
    value unquoted as Hydra reads it."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{key}=")]
    return _unquoted(key, values[-1]) if values else None


def _unquoted(key: str, value: str) -> str:
    if len(value) < 2 or value[0] not in "'\"" or value[-1] != value[0]:
        return value
    try:
        parsed = OverridesParser.create().parse_override(f"{key}={value}").value()
    except HydraException:
        return value
    return parsed if isinstance(parsed, str) else value


# The overrides whose values are paths.
PATH_KEYS = ("run", "resume", "hydra.run.dir", "hydra.sweep.dir")


def quoted(value: str, key: str = "") -> str:
    """`value` as a quoted string of Hydra's override grammar."""
    quote = "'" if "'" not in value else '"'
    if quote in value or value.endswith("\\"):
        raise UserError(key, f"'{value}': a path holding both kinds of quotes cannot be given")
    return f"{quote}{value}{quote}"


def override_value(key: str, value: str) -> str:
    """`value` as Hydra's override grammar reads it back for `key`: as it is, or quoted."""
    try:
        readable = OverridesParser.create().parse_override(f"{key}={value}").value() == value
    except HydraException:
        readable = False
    return value if readable else quoted(value, key)


def quote_paths(args: Sequence[str]) -> list[str]:
    """The arguments with each path that Hydra's grammar cannot read unquoted (non-ASCII
    characters, spaces at its ends, brackets...) quoted for it."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key in PATH_KEYS and value and value[0] not in "'\"":
            arg = f"{key}={override_value(key, value)}"
        out.append(arg)
    return out


def informational(args: Sequence[str]) -> bool:
    flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion"}
    return any(arg in flags or arg == "-sc" for arg in args)


def _holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in (".hydra", "checkpoints", "metrics.jsonl"))


def refuse_existing_run_dir(args: Sequence[str]) -> None:
    """A fresh run never writes into a directory that already holds a run."""
    chosen = arg_value(args, "hydra.run.dir")
    if chosen is None or "-m" in args or "--multirun" in args:
        return
    _refuse_run_in(Path(chosen), chosen)


def _refuse_run_in(path: Path, chosen: str) -> None:
    if _holds_run(path):
        resume = override_value("resume", chosen)
        raise UserError(
            "hydra.run.dir",
            f"'{chosen}' already holds a run; continue it with resume={resume} or choose a new "
            "directory",
        )
    if (path / "multirun.yaml").is_file():
        raise UserError("hydra.run.dir", f"'{chosen}' is a sweep's directory; choose a new one")


def refuse_nested(path: Path, key: str) -> None:
    """No run or sweep is created inside a run, a sweep's job or a sweep's root."""
    for above in Path(os.path.abspath(path)).parents:
        if (above / "multirun.yaml").is_file():
            kind = "sweep"
        elif (above / ".hydra" / "config.yaml").is_file() or (
            above / "checkpoints" / "last.pt"
        ).is_file():
            kind = "run"
        else:
            continue
        raise UserError(
            key, f"'{path}' lies inside the {kind} '{above}'; choose a place outside it"
        )


# What this process created for its command (directories, a sweep's root), undone by
# `end_command` if the command was refused before it used them.
_CREATED: list[Path] = []
_SWEEP: dict[str, Any] = {}


def _make_dirs(path: Path) -> None:
    """`mkdir -p path`, remembering each directory made (`end_command` removes them if empty)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        _CREATED.append(directory)


def end_command() -> None:
    """At the end of a command: release its locks, remove a refused sweep's multirun.yaml, and
    remove the directories it made that stayed empty (a refused run leaves no outputs/DATE/)."""
    root = _SWEEP.pop("root", None)
    ended = _SWEEP.pop("ended", False)
    release_locks()
    if root is not None and not ended and root in _CREATED:
        left = {p.name for p in root.iterdir()} if root.is_dir() else set()
        if left <= {"multirun.yaml"}:
            shutil.rmtree(root, ignore_errors=True)
    for directory in reversed(_CREATED):
        with suppress(OSError):
            directory.rmdir()
    _CREATED.clear()


class Refusal(BaseException):
    """A `UserError` raised in a Hydra callback, carried past Hydra's guard around callbacks
    (which turns an `Exception` into a warning and goes on); `gandiv.cli` reports the error."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def _refusing(key: str) -> Iterator[None]:
    try:
        yield
    except UserError as err:
        raise Refusal(err) from None
    except OSError as err:
        where = err.filename or key
        raise Refusal(
            UserError(str(where), f"{err.strerror or err}; choose a writable place ({key})")
        ) from None


class ClaimRunDir(Callback):
    """Hydra callback: claim a fresh run's directory with an exclusive `mkdir` before Hydra writes
    into it, so two runs started in the same microsecond never share one (the later one takes the
    next free ``-N`` suffix), and lock it. A directory the user names (`hydra.run.dir=`) is
    theirs: it is locked, then checked to hold no run (`resume=` locks its own)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") is not None:
            return
        with _refusing("hydra.run.dir"):
            self._start(config)

    def _start(self, config: DictConfig) -> None:
        ranks = torchrun_ranks()
        main = ranks is None or ranks.main
        path = Path(str(config.hydra.run.dir))
        if main:
            refuse_nested(path, "hydra.run.dir")
        if any(str(o).startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra):
            if path.exists() and not path.is_dir():
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            if main:
                _make_dirs(path)
                lock_directory(path)
                _refuse_run_in(path, str(path))
            return
        if ranks is not None:  # rank 0 claims the directory, every rank uses it
            from gandiv.training.distributed import share_from_main

            claimed = self._claim(str(path)) if main else None
            with read_write(config.hydra.run):
                config.hydra.run.dir = share_from_main(claimed)
            return
        with read_write(config.hydra.run):
            config.hydra.run.dir = self._claim(str(path))

    @staticmethod
    def _claim(base: str) -> str:
        """Create `base` (or the first free `base-N`) exclusively and lock it; return its path."""
        path, suffix = base, 0
        while True:
            _make_dirs(Path(base).parent)
            try:
                os.mkdir(path)
            except FileExistsError:
                suffix += 1
                path = f"{base}-{suffix}"
                continue
            except FileNotFoundError:  # a parent just removed by a refused run: make it again
                continue
            _CREATED.append(Path(path))
            lock_directory(path)
            return path


class ClaimSweepDir(Callback):
    """Hydra callback: before a sweep writes anything, refuse a sweep directory inside a run, a
    job or another sweep, and a sweep run again into a directory whose jobs were trained with
    another config (their files are never rewritten); lock the sweep's root."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _refusing("hydra.sweep.dir"):
            self._start(config)

    @staticmethod
    def _start(config: DictConfig) -> None:
        root = Path(str(config.hydra.sweep.dir))
        refuse_nested(root, "hydra.sweep.dir")
        if _holds_run(root):
            raise UserError("hydra.sweep.dir", f"'{root}' is a run's directory; choose a new one")
        if root.is_dir():
            lock_directory(root)
            _refuse_changed_jobs(config, root)
        else:
            _make_dirs(root)
            lock_directory(root)
        _SWEEP["root"] = root

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _SWEEP["ended"] = True


def _refuse_changed_jobs(config: DictConfig, root: Path) -> None:
    """Compose every job of the sweep (as its sweeper does) and refuse the sweep if a job whose
    directory already holds a run was trained with another config than the job's now, but for
    the keys a resume may change (`gandiv.config.RESUMABLE_KEYS`)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra

    from gandiv.commands.train import differences
    from gandiv.config import RESUMABLE_KEYS, with_added_keys

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    task = [str(o) for o in config.hydra.overrides.task]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *task])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    refused: dict[str, list[str]] = {}
    for num, overrides in enumerate(jobs):
        job = loader.load_sweep_config(config, list(overrides))
        with read_write(job.hydra.job):
            job.hydra.job.num = num
            job.hydra.job.id = f"job_id_for_{num}"
        recorded_file = root / str(job.hydra.sweep.subdir) / ".hydra" / "config.yaml"
        if not recorded_file.is_file():
            continue
        try:
            recorded = OmegaConf.to_container(OmegaConf.load(recorded_file), resolve=True)
        except Exception as err:
            raise UserError(str(recorded_file), f"unreadable ({first_line(str(err))})") from None
        keys = [str(k) for k in job if k != "hydra"]
        now = OmegaConf.to_container(OmegaConf.masked_copy(job, keys), resolve=True)
        changed = [
            k
            for k in differences(with_added_keys(recorded), now)
            if k not in RESUMABLE_KEYS and k != "resume"
        ]
        if changed:
            refused[str(job.hydra.sweep.subdir)] = changed
    if refused:
        names = ("jobs " if len(refused) > 1 else "job ") + ", ".join(refused)
        keys = sorted({k for changed in refused.values() for k in changed})
        raise UserError(
            "hydra.sweep.dir",
            f"'{root}' holds jobs trained with another config ({names}: {', '.join(keys)} "
            "differ); their files are kept as they are: sweep into a new hydra.sweep.dir, or "
            "run it again with the jobs' own settings",
        )


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
    other = arg_value(args, "hydra.run.dir")
    if other is not None:
        raise UserError(
            "hydra.run.dir",
            f"a resumed run continues in its own directory ({run}); drop hydra.run.dir={other}",
        )
    path = Path(run)
    if not path.is_dir():
        raise UserError("resume", f"'{run}' is not a directory; give a run directory to continue")
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError("resume", f"'{run}' is not a gandiv run directory (no {overrides_file})")
    checkpoints = path / "checkpoints"
    if not any((checkpoints / name).is_file() for name in ("last.pt", "prev.pt")):
        raise UserError("resume", f"'{run}' has no checkpoints/last.pt to resume from")
    refuse_read_only("resume", path, "continue it")
    ranks = torchrun_ranks()
    if ranks is None or ranks.main:  # (torchrun: rank 0 holds the run's lock)
        lock_directory(path)
    from gandiv.config import load_train_config

    load_train_config(path / ".hydra" / "config.yaml")  # a gandiv run's, still valid
    try:
        original = [str(o) for o in OmegaConf.load(overrides_file)]
    except Exception as err:
        raise UserError(str(overrides_file), f"unreadable ({first_line(str(err))})") from None
    original = [o for o in original if not o.startswith("resume=")]
    return [
        *original,
        *args,
        f"hydra.run.dir={override_value('hydra.run.dir', str(path))}",
        "hydra.output_subdir=null",
    ]


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
        lock_directory(path)
        return args
    if command == "eval" and path.is_dir() and any(path.glob("*/.hydra/config.yaml")):
        refuse_read_only("run", path, then)
        lock_directory(path)  # the sweep's root, then each of its jobs
        for job in sorted(path.glob("*/.hydra/config.yaml")):
            lock_directory(job.parent.parent)
        return args
    what = "run or sweep directory" if command == "eval" else "run directory"
    raise UserError("run", f"'{run}' is not a gandiv {what} (no .hydra/config.yaml)")
