"""A sweep's vectorisable jobs: set aside while the sweep runs, then trained in groups.

Under the `vectorized` launcher (`hydra_plugins.gandiv_vectorized_launcher`), `gandiv train`
only prepares a job that can join a vectorised group and sets it aside (`defer`, while
`deferring`); after the last job, `vectorized_groups` cuts the set-aside jobs into groups of
equal `group_key` and `train_group` trains each group as one `VectorizedStep` computation. Every
job still writes its own run directory, and its log records still reach its own log file
(`job_log`), exactly as alone.

The jobs are `gandiv.commands.train.PreparedRun`s; this module sees them as `GroupJob`, the part
of them it uses (training sits below the commands in the layers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol, TypeVar

import torch

from gandiv.errors import EXIT_CRASH, Interrupted, NumericalError, UserError
from gandiv.training.loop import Cadence, RunTask, TrainResult, train_runs
from gandiv.training.run_dir import RunDirectory
from gandiv.training.speed import StepPrecision
from gandiv.training.vectorized import CPU_GROUP_BYTES, VectorizedStep, cache_group_size, loss_order

log = logging.getLogger("gandiv")


class GroupJob(Protocol):
    """A prepared `gandiv train` job, as a vectorised group trains it."""

    task: RunTask
    device: torch.device
    precision: StepPrecision  # autocast around the step's losses
    log_file: str | None  # the job's log file and its format (Hydra's job logging)
    log_format: logging.Formatter | None
    console_format: logging.Formatter | None  # the job's console format

    @property
    def run(self) -> RunDirectory: ...

    @property
    def cadence(self) -> Cadence: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def critic_steps(self) -> int: ...

    @property
    def progress(self) -> bool: ...

    def group_key(self) -> tuple[Any, ...] | None:
        """What the runs of one group share (None: the job trains alone)."""

    def apply_process_settings(self) -> None:
        """The process-wide settings (threads, device tuning) the job trains with."""

    def announce(self) -> None:
        """Log what is trained where."""

    def train_alone(self) -> None:
        """Train the job by itself and write its final files."""

    def finish(self, result: TrainResult) -> None:
        """Write the job's final files after training."""

    def failed(self, error: NumericalError) -> None:
        """Record that the job stopped on a non-finite value."""

    def interrupted(self, err: Interrupted) -> None:
        """Record that a signal stopped the job."""


Job = TypeVar("Job", bound=GroupJob)


@contextmanager
def recording_crash(runs: Sequence[RunDirectory], multirun: bool) -> Iterator[None]:
    """In a sweep, a bug's traceback goes to the jobs' logs and the failure to their summaries."""
    try:
        yield
    except (UserError, NumericalError, Interrupted):
        raise
    except Exception as err:
        if multirun:
            log.exception("job crashed")
            for run in runs:
                run.record_failure(f"{type(err).__name__}: {err}", EXIT_CRASH)
        raise


# Jobs set aside for vectorised training while the vectorized launcher runs a sweep (None: off).
_deferred: list[GroupJob] | None = None


@contextmanager
def deferring() -> Iterator[list[GroupJob]]:
    """While active, `defer` sets aside the jobs that can be vectorised (the list yielded)."""
    global _deferred
    pending: list[GroupJob] = []
    _deferred = pending
    try:
        yield pending
    finally:
        _deferred = None


def defer(job: GroupJob) -> bool:
    """Set `job` aside for a vectorised group if the launcher is `deferring` and the job can
    join one; whether it was set aside."""
    if _deferred is None or job.group_key() is None:
        return False
    _deferred.append(job)
    return True


def vectorized_groups(pending: Sequence[Job], max_group: int | None) -> list[list[Job]]:
    """The set-aside jobs in groups of equal `GroupJob.group_key`, in the sweep's order, each
    cut into groups of at most `max_group` runs (0: no limit; None: `cache_group_size`)."""
    groups: dict[Any, list[Job]] = {}
    for prepared in pending:
        groups.setdefault(prepared.group_key(), []).append(prepared)
    cut = []
    for group in groups.values():
        first = group[0]
        size = max_group
        if size is None:
            size = cache_group_size(
                first.task.model, first.task.objective, first.batch_size, first.device
            )
            if 0 < size < len(group):
                log.info(
                    "max_group=auto: %d compatible jobs at a time of %d (on the CPU a group's "
                    "layer outputs stay within %d KiB; set hydra.launcher.max_group to change)",
                    size,
                    len(group),
                    CPU_GROUP_BYTES // 1024,
                )
        size = size or len(group)
        cut += [group[i : i + size] for i in range(0, len(group), size)]
    return cut


def train_group(group: Sequence[Job]) -> list[tuple[Job, NumericalError]]:
    """Train a group of set-aside sweep jobs (`vectorized_groups`) in one process: two or more as
    one vectorised computation, one alone. Every run writes its own directory exactly as alone;
    returns the runs that stopped on a non-finite value (recorded in their summaries)."""
    if len(group) == 1:
        with job_log(group[0]), recording_crash([group[0].run], multirun=True):
            try:
                group[0].train_alone()
            except NumericalError as err:
                return [(group[0], err)]
        return []
    group = sorted(group, key=lambda p: loss_order(p.task.objective))  # runs sharing a loss adjoin
    first = group[0]
    group[0].apply_process_settings()  # (the group key makes them the same for every run)
    tasks = [p.task for p in group]
    failed: list[tuple[Job, NumericalError]] = []

    def stopped(k: int, error: NumericalError) -> None:  # as it happens, the others train on
        log.error("%s", error, extra={"job": group[k]})  # (in that job's log only)
        group[k].failed(error)
        failed.append((group[k], error))

    try:
        with recording_crash([p.run for p in group], multirun=True):
            for prepared in group:
                with job_log(prepared):
                    prepared.announce()
            with job_log(*group):
                log.info("training %d runs as one vectorised group", len(group))
                step = partial(
                    VectorizedStep,
                    critic_steps=first.critic_steps,
                    batch_size=first.batch_size,
                    autocast=group[0].precision.autocast,
                )
                results = train_runs(
                    tasks,
                    step,
                    group[0].cadence,
                    first.progress,
                    f"train ×{len(group)}",
                    on_failure=stopped,
                )
            for prepared, result in zip(group, results, strict=True):
                if result.error is None:
                    with job_log(prepared):
                        prepared.finish(result)
    except Interrupted as err:
        for prepared in group:
            prepared.interrupted(err)
        raise
    finally:
        for prepared in group:
            prepared.run.close()
    return failed


class _OnlyJob(logging.Filter):
    """Lets through records for any job (no `job` attribute) or for this one."""

    def __init__(self, job: GroupJob) -> None:
        super().__init__()
        self.job = job

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "job", self.job) is self.job


def consoles() -> list[logging.Handler]:
    """The root logger's handlers that write to a stream rather than a file."""
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


@contextmanager
def job_log(*jobs: GroupJob) -> Iterator[None]:
    """Log records go to these jobs' log files too (Hydra opened each only while preparing it),
    and to the console in the jobs' format (not the launcher's); a record with
    `extra={"job": job}` goes to that job's file only."""
    root = logging.getLogger()
    streams = consoles()
    launcher_formats = [h.formatter for h in streams]
    if jobs and jobs[0].console_format is not None:
        for console in streams:
            console.setFormatter(jobs[0].console_format)
    handlers = []
    for job in jobs:
        if job.log_file is not None:
            handler = logging.FileHandler(job.log_file)
            handler.setFormatter(job.log_format)
            handler.addFilter(_OnlyJob(job))
            handlers.append(handler)
            root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for console, launcher_format in zip(streams, launcher_formats, strict=True):
            console.setFormatter(launcher_format)
