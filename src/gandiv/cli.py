"""The `gandiv` command: dispatches `train`, `eval` and `plot` to their Hydra apps, whose task
functions are in `gandiv.commands`, and `sweep` to `gandiv.commands.sweep`.

Each of the three is a full Hydra application with its own top config (``conf/train.yaml``,
``conf/eval.yaml``), so ``-m``, launchers, ``--cfg job``, ``--help`` and shell completion work as
Hydra users expect. User errors — from Hydra's composition or from gandiv's own validation —
end as one line on stderr and exit code 2; no traceback.

Which run directory a command works in (fresh, ``resume=``, ``run=``, torchrun's ranks) is
decided from the arguments before Hydra starts, by `gandiv.run_dirs`.

Nothing here imports torch: ``--help`` and completion stay fast.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.util
import os
import re
import shutil
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from gandiv import __version__
from gandiv.commands.sweep import sweep
from gandiv.errors import (
    EXIT_NUMERICAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USER_ERROR,
    FAILED_JOBS,
    Interrupted,
    NumericalError,
    UserError,
    first_line,
    out_of_memory,
)
from gandiv.run_dirs import (
    Refusal,
    arg_value,
    end_command,
    informational,
    join_torchrun,
    quote_paths,
    resume_args,
    run_args,
    torchrun_ranks,
)

USAGE = """\
usage: gandiv <command> [overrides ...]

commands:
  train   fit a generative model under a chosen divergence, into a fresh run directory
            gandiv train objective=reverse_kl trainer.steps=2000
            gandiv train -m objective=direct objective.divergence=kl,reverse_kl,js
            gandiv train -m hydra/launcher=joblib objective=js_pi objective.pi=0.1,0.5,0.9
            gandiv train -m hydra/launcher=vectorized model=mlp model.width=32 critic.width=32 \\
                objective=js_pi objective.pi=0.1,0.5,0.9 trainer.seed=0,1   (batched runs)
            gandiv train resume=DIR trainer.steps=4000
  eval    evaluate a finished run (or every job of a sweep) on its held-out split: DIR/eval.json
            gandiv eval run=DIR eval.critic.divergences=[js,kl,wasserstein]
  plot    redraw the figures of a finished run from its checkpoint and metrics
            gandiv plot run=DIR
  sweep   rebuild a finished sweep's summary (sweep.csv, seeds.csv, sweep.png), e.g. one copied
          back from a cluster
            gandiv sweep summarize DIR

train, eval and plot are Hydra apps: `gandiv train --help` lists its config groups and options,
`gandiv train --cfg job` prints the composed config.
Shell completion (bash): eval "$(gandiv train -sc install=bash)"
gandiv --version prints the version.
"""

COMMANDS = ("train", "eval", "plot", "sweep")
# What the Hydra apps' task functions run on (imported before Hydra starts: `_import_task_modules`).
TASK_MODULES = ("gandiv.commands.train", "gandiv.commands.evaluate", "gandiv.commands.plot")


def _quiet_launcher_schema_warning() -> None:
    """gandiv's launcher configs (conf/hydra/launcher/) set gandiv's defaults for the launcher
    plugins' configs of the same name, and are type-checked against them; Hydra warns about that."""
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema"
    )


_quiet_launcher_schema_warning()  # for the launchers' worker processes, which import gandiv.cli

# The launcher plugins behind conf/hydra/launcher/ (the optional extra `gandiv[sweep]`).
LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
}


def describe_os_error(command: str, err: OSError, multirun: bool = False) -> str:
    """One line for a place that could not be written or read, naming it and what to do."""
    where = err.filename or "output"
    if command == "train":
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        advice = f"choose a writable place ({key})"
    elif command == "sweep":
        advice = "the sweep directory must be writable, with nothing in this file's place"
    else:
        advice = "the run directory must be writable, with nothing in this file's place"
    return f"{where}: {err.strerror or err}; {advice}"


def _quiet_broken_pipe() -> None:
    """The reader of our output went away (`gandiv train --help | head`): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0)


@contextmanager
def _reported(command: str) -> Iterator[None]:
    """Turn gandiv's own errors into one line and their exit code.

    Used inside the Hydra task functions too: an exception leaving a task function makes Hydra
    print a banner of its own first, a `SystemExit` does not.
    """
    try:
        yield
    except UserError as err:
        _fail(command, str(err))
    except NumericalError as err:
        _fail(command, str(err), EXIT_NUMERICAL)
    except Interrupted as err:
        again = (
            f"resume with resume={err.run}"
            if err.run is not None
            else "run the sweep again into its hydra.sweep.dir to continue it"
        )
        sys.stderr.write(f"gandiv {command}: {err}; checkpoint saved, {again}\n")
        raise SystemExit(EXIT_SIGINT if err.signum == signal.SIGINT else EXIT_SIGTERM) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as err:  # a file the command writes or reads
        _fail(
            command, describe_os_error(command, err, "-m" in sys.argv or "--multirun" in sys.argv)
        )
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        reason = first_line(str(err)) or type(err).__name__
        _fail(
            command,
            f"out of memory ({reason}); free memory, or ask for less (smaller networks, "
            "batches or samples)",
        )
    except KeyboardInterrupt:  # outside the training loop (start-up, final files)
        run = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else "DIR"
        sys.stderr.write(
            f"gandiv {command}: interrupted; a run can be finished with resume={run}\n"
        )
        raise SystemExit(EXIT_SIGINT) from None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _train_app(cfg: DictConfig) -> None:
    from gandiv.commands.train import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        with _reported("train"):
            train(cfg)
        return
    # In a sweep a failing job is recorded in its summary.json (whatever the launcher, and in
    # whichever process it runs) and the others go on; when the sweep ends, the summary names the
    # failed jobs and gandiv exits non-zero (see gandiv.sweep.SweepSummary).
    with _sweep_job([hydra_cfg.job.num]):
        train(cfg)


@contextmanager
def _sweep_job(nums: Sequence[int | None]) -> Iterator[None]:
    """Report a sweep's failing jobs on stderr and go on; Ctrl-C or SIGTERM stops the sweep."""
    one = len(nums) == 1
    jobs = ("job " if one else "jobs ") + ", ".join(str(n) for n in nums)
    try:
        yield
    except Interrupted:  # the job saved its checkpoint: stop the whole sweep
        with _reported("train"):  # as SystemExit, which Hydra's launchers let through
            raise
    except (UserError, NumericalError) as err:
        sys.stderr.write(f"gandiv train: {jobs} failed: {err}\n")
    except Exception:  # a bug: the traceback is in the job's train.log, the sweep goes on
        sys.stderr.write(
            f"gandiv train: {jobs} crashed; see {'its' if one else 'their'} train.log\n"
        )


def train_deferred(pending: Sequence[Any], max_group: int | None) -> None:
    """Train the sweep jobs set aside by the vectorized launcher: each group of compatible jobs as
    one vectorised computation, the others alone (see gandiv.training.groups.train_group)."""
    from gandiv.training.groups import train_group, vectorized_groups

    for group in vectorized_groups(pending, max_group):
        with _sweep_job([p.job_num for p in group]):
            for prepared, err in train_group(group):
                sys.stderr.write(f"gandiv train: job {prepared.job_num} failed: {err}\n")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _eval_app(cfg: DictConfig) -> None:
    from gandiv.commands.evaluate import evaluate

    with _reported("eval"):
        evaluate(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="plot")
def _plot_app(cfg: DictConfig) -> None:
    from gandiv.commands.plot import plot

    with _reported("plot"):
        plot(cfg)


_APPS: dict[str, Callable[[], Any]] = {"train": _train_app, "eval": _eval_app, "plot": _plot_app}


def _fail(command: str, message: str, code: int = EXIT_USER_ERROR) -> None:
    program = f"gandiv {command}" if command else "gandiv"
    ranks = torchrun_ranks()
    if ranks is None or ranks.main:  # under torchrun, one line (rank 0's), not one per rank
        sys.stderr.write(f"{program}: error: {message}\n")
        sys.stderr.flush()
    raise SystemExit(code)


def describe_hydra_error(err: Exception) -> str:
    """One line for an error Hydra raised while parsing overrides or composing the config."""
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    options = re.search(r"Available options in '([^']+)':\s*\n((?:\s+\S+\n?)+)", text)
    if missing and options:
        group, option = missing.groups()
        choices = ", ".join(options.group(2).split())
        return f"{group}={option}: unknown option; choose one of: {choices}"
    if missing:
        return f"{missing.group(1)}={missing.group(2)}: unknown option"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        from gandiv.config import removed_key  # (imports torch: not before it is needed)

        key = override.group(1)
        gone = removed_key(key)
        if gone:
            return f"{key}: {gone}"
        return f"{key}: unknown key (`--cfg job` lists every key)"
    appending = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if appending:
        key = appending.group(1)
        return f"+{key}: the key already exists; set it without '+': {key}=VALUE"
    if isinstance(err.__cause__, OmegaConfBaseException):
        return f"{first_line(text)}: {first_line(str(err.__cause__))}"
    return first_line(text)


def _describe_parse_error(args: Sequence[str], err: Exception) -> str:
    """Name the override Hydra could not parse."""
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as bad:
            return (
                f"{arg}: cannot parse this override ({first_line(str(bad))}); quote lists and "
                "strings for the shell, e.g. 'dataset.weights=[0.3,0.7]'"
            )
    return first_line(str(err))


def _complete(args: list[str]) -> None:
    """Shell completion: `gandiv -sc query=bash` with COMP_LINE set by the installed script."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    completing_command = len(words) < 2 or (len(words) == 2 and not line.endswith(" "))
    if any(a.startswith("query=") for a in args) and completing_command:
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMANDS if c.startswith(prefix)))
        return
    command = words[1] if len(words) >= 2 and words[1] in _APPS else "train"
    if len(words) >= 2 and words[1] == "sweep":
        print("summarize")
        return
    if len(words) >= 2 and words[1] in _APPS:
        os.environ["COMP_LINE"] = line.replace(words[1], "", 1)
    _run(command, args)


@contextmanager
def _help_shares_the_config_store(args: Sequence[str]) -> Iterator[None]:
    """While Hydra prints a help page, its copies of the config repository share the ConfigStore.

    Hydra's help lists every config group's options through a fresh copy of its config repository
    per group (84 for `gandiv train --help`), each with a deep copy of the whole ConfigStore (the
    schemas of Hydra and of every launcher plugin): two thirds of the help's time. Listing only
    reads the store, so sharing it prints the same page.
    """
    if not any(arg in ("--help", "-h", "--hydra-help") for arg in args):
        yield
        return
    ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del ConfigStore.__deepcopy__  # type: ignore[attr-defined]


def _import_task_modules() -> None:
    """Import what the tasks run on (torch, matplotlib, the rest of gandiv: some 350,000 objects
    that live as long as the process) with the cyclic garbage collector paused, then exempt them
    from its later passes (`gc.freeze`), and at exit exempt everything: the interpreter's last
    passes would only walk objects that the process's end frees anyway. Without this the
    collector walks the imported objects again and again, about a second of a default run,
    and as much again at exit.
    """
    if all(name in sys.modules for name in TASK_MODULES):  # (an earlier command's, this process)
        return
    gc.disable()
    try:
        for name in TASK_MODULES:
            importlib.import_module(name)
    finally:
        gc.enable()
    gc.freeze()
    atexit.register(gc.freeze)


def _run(command: str, args: list[str]) -> None:
    """Run one Hydra app with `args`, translating user errors to one line and exit code 2."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of Hydra's printer
    try:
        _run_app(command, args)
    finally:
        end_command()  # the locks released; what a refused command made removed


def _run_app(command: str, args: list[str]) -> None:
    with _reported(command):
        args = quote_paths(args)
        args = resume_args(args) if command == "train" else run_args(command, args)
        _check_modes(args)
        _check_overrides(command, args)
        if torchrun_ranks() is not None:
            args = join_torchrun(command, args)
        if not informational(args):
            _import_task_modules()
        _quiet_launcher_schema_warning()
        sys.argv = [sys.argv[0], *args]
        FAILED_JOBS.clear()
        try:
            with _help_shares_the_config_store(args):
                _APPS[command]()
        except Refusal as refused:  # from gandiv's callbacks (gandiv.run_dirs)
            raise refused.error from None
        except HydraException as err:
            if isinstance(err.__cause__, UserError):  # from gandiv's launcher, built by Hydra
                raise err.__cause__ from None
            if isinstance(err, OverrideParseException):
                _fail(command, _describe_parse_error(args, err))
            if isinstance(err, CompactHydraException):
                _fail(command, describe_hydra_error(err))
            _fail(command, first_line(str(err)))
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as err:  # e.g. an output directory that cannot be created or written
            multirun = "-m" in args or "--multirun" in args
            _fail(command, describe_os_error(command, err, multirun))
        if FAILED_JOBS:
            jobs = ", ".join(job for job, _ in FAILED_JOBS)
            code = max(code for _, code in FAILED_JOBS)
            _fail(command, f"failed jobs: {jobs} (the others finished; see sweep.csv)", code)


def _group_options(group: str) -> list[str] | None:
    """The options of a config group of gandiv's configs (None: `group` is not a group)."""
    if not re.fullmatch(r"[a-z_]+(/[a-z_]+)*", group):
        return None
    folder = files("gandiv.conf").joinpath(group)
    if not folder.is_dir():
        return None
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _check_overrides(command: str, args: Sequence[str]) -> None:
    """Overrides Hydra would take and then fail on with a traceback or a misleading message: a
    config group set to null or deleted, a required key deleted, a sweep over no values, a
    launcher asked for no processes."""
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key, _, value = arg.partition("=")
        name = key.lstrip("+~")
        options = _group_options(name)
        if options is not None and (value == "null" or key.startswith("~")):
            how = "deleted" if key.startswith("~") else "null"
            raise UserError(
                name,
                f"a config group needs an option; it cannot be {how}: choose one with "
                f"{name}=NAME ({', '.join(options)})",
            )
        if key.startswith("~") and "." in name and not name.startswith("hydra."):
            raise UserError(
                name,
                f"every key of gandiv {command}'s config is needed and cannot be deleted; "
                f"set a value instead: {name}=VALUE",
            )
        if name == "hydra.launcher.n_jobs" and not re.fullmatch(r"-?[1-9][0-9]*|\$\{.*\}", value):
            raise UserError(
                name,
                f"must be a number of processes (>= 1; -1: one per core), got {value}",
            )
    if "-m" not in args and "--multirun" not in args:
        return
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
            if override.is_sweep_override() and not list(override.sweep_string_iterator()):
                raise UserError(arg, "sweeps over no values; a sweep needs at least one job")
        except (OverrideParseException, ValueError, TypeError):
            continue  # (reported by Hydra; an interval sweep has no values to list)


def _check_modes(args: Sequence[str]) -> None:
    """-m goes with neither --cfg nor --info; a named sweep launcher needs its plugin."""
    multirun = "-m" in args or "--multirun" in args
    shown = [a for a in args if a in ("--cfg", "-c", "--info", "-i")]
    if multirun and shown:
        raise UserError(
            "-m", f"cannot be combined with {shown[0]}; drop -m to see one job's config"
        )
    launcher = arg_value(args, "hydra/launcher")
    if launcher is None or informational(args):
        return
    plugin = LAUNCHER_PLUGINS.get(launcher)
    if plugin is not None and importlib.util.find_spec(plugin) is None:
        raise UserError(
            "hydra/launcher",
            f"{launcher} needs the launcher plugins: pip install 'gandiv[sweep]' "
            "(`make install` includes them)",
        )
    if launcher == "submitit_slurm" and shutil.which("srun") is None:
        raise UserError(
            "hydra/launcher",
            "submitit_slurm submits to SLURM, and this machine has no srun; run it on the "
            "cluster's login node, or try the sweep here with hydra/launcher=submitit_local",
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `gandiv` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(USAGE)
        raise SystemExit(EXIT_USER_ERROR)
    try:
        _main(args)
    except BrokenPipeError:
        _quiet_broken_pipe()


def _main(args: list[str]) -> None:
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        sys.stdout.flush()
        return
    if args[0] == "--version":
        sys.stdout.write(f"gandiv {__version__}\n")
        sys.stdout.flush()
        return
    if args[0] in ("-sc", "--shell-completion"):
        _complete(args)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        sys.stderr.write(USAGE)
        _fail("", f"unknown command '{command}'; choose one of: {', '.join(COMMANDS)}")
    if command == "sweep":
        with _reported("sweep"):
            sweep(rest)
            sys.stdout.flush()
        return
    _run(command, rest)


if __name__ == "__main__":  # pragma: no cover
    main()
