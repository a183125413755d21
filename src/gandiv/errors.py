"""The errors gandiv reports to its user, and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CRASH = 1  # an internal error: a bug, reported with its traceback
EXIT_USER_ERROR = 2  # bad input: one line naming the key or file and what is allowed
EXIT_NUMERICAL = (
    3  # a loss or a parameter became NaN/Inf: the run stopped, last good checkpoint kept
)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# The jobs of the last multirun that did not complete, as (job, exit code): filled in the process
# that ran `gandiv train -m` when the sweep ends (gandiv.sweep.SweepSummary), whichever processes
# or machines the launcher ran the jobs in; the command then exits with the largest code.
FAILED_JOBS: list[tuple[str, int]] = []


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2, no traceback.

    `where` names the config key or the file at fault (e.g. ``trainer.steps``).
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class NumericalError(Exception):
    """A non-finite loss or parameter stopped training (exit code 3)."""


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint (exit 130/143)."""

    def __init__(self, signum: int, run: str | None = None) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.run = run  # the run directory to resume (None: several, e.g. a vectorised group)


def first_line(text: str) -> str:
    """The first non-blank line of `text`, stripped (a message's one line)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation that failed: Python's MemoryError, or torch's RuntimeError
    (its CPU allocator's "can't allocate memory", CUDA's "out of memory")."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "cannot allocate")
    )
