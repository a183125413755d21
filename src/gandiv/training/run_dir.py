"""The run directory: the one object that writes a run's files (README: "What a run leaves behind").

Every file that must survive a crash is written atomically: to a temporary file in the same
directory, flushed and fsync'ed, then `os.replace`d over the old one, so a reader (or a resumed
run) sees either the previous complete file or the new complete file, never a torn one.
`metrics.jsonl` is append-only; a checkpoint records its length, and a resumed run truncates it
back to that length so no step is logged twice. The checkpoint before the last is kept as
`checkpoints/prev.pt`, so one damaged file does not lose the run.

One process writes a run (or a sweep's root) at a time: see `gandiv.training.locks`.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from gandiv.errors import UserError

# What every checkpoint holds (see training.loop): checked before a resume touches anything.
CHECKPOINT_KEYS = (
    "step",
    "model",
    "objective",
    "optimizer",
    "critic_optimizer",
    "generator",
    "torch_rng",
    "loss_sums",
    "loss_count",
    "first_bad",
    "metrics_bytes",
    "train_time_s",
    "config",
    "device",
)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


# A temporary file of `atomic_write`: `.NAME.tmp-PID`.
_TEMPORARY = re.compile(r"^\.(.+)\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's process)
        return True
    return True


def remove_stale_temporaries(directory: Path, name: str | None = None) -> None:
    """Remove the temporary files (of `name`, or of every file) that killed writers left in
    `directory`: those of processes that no longer run."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or (name is not None and match.group(1) != name):
            continue
        if int(match.group(2)) != os.getpid() and not _alive(int(match.group(2))):
            entry.unlink(missing_ok=True)


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], object], keep_previous: Path | None = None
) -> None:
    """Write `path` atomically: temp file, flush, fsync, `os.replace`; then remove the temporary
    files of `path` that killed writers left. With `keep_previous`, the file being replaced
    becomes that file first (a hard link renamed over it: `path` exists throughout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous is not None and path.is_file():
            previous = _temporary(keep_previous)
            previous.unlink(missing_ok=True)
            try:
                os.link(path, previous)
            except OSError:  # (no hard links on this file system)
                previous.write_bytes(path.read_bytes())
            os.replace(previous, keep_previous)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if keep_previous is not None:
            _temporary(keep_previous).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):
            # the file the user knows (a full disk's write error names no file)
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    _fsync_dir(path.parent)
    remove_stale_temporaries(path.parent, path.name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: non-finite numbers are written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


class RunDirectory:
    """Owns a run directory: metrics, checkpoints, summary, samples."""

    writes = True  # False for the processes of a torchrun run other than rank 0

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_path = self.path / "checkpoints" / "last.pt"
        self.previous_checkpoint_path = self.path / "checkpoints" / "prev.pt"
        self.summary_path = self.path / "summary.json"
        self.samples_path = self.path / "samples.npy"
        self.config_path = self.path / ".hydra" / "config.yaml"
        self._metrics: IO[str] | None = None

    # metrics.jsonl ------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line (one logged step)."""
        if self._metrics is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        self._metrics.write(json.dumps(_finite(record), allow_nan=False) + "\n")
        self._metrics.flush()

    def sync_metrics(self) -> int:
        """Make every metrics line so far durable; return the file's length in bytes."""
        if self._metrics is not None:
            self._metrics.flush()
            os.fsync(self._metrics.fileno())
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def truncate_metrics(self, length: int) -> None:
        """Drop lines written after the checkpoint that recorded `length` (resume)."""
        self.close()
        if self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as handle:
                handle.truncate(length)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        try:
            with open(self.metrics_path, encoding="utf-8") as handle:
                lines = [line for line in handle.read().split("\n") if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise UserError(
                str(self.metrics_path), f"unreadable ({reason}); the run's log is damaged"
            ) from None
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):  # a line torn by a crash: the resume truncates it
                    break
                raise UserError(
                    str(self.metrics_path), f"line {number} is not JSON; the file is corrupt"
                ) from None
        return records

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    # checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            atomic_write(
                self.checkpoint_path,
                lambda handle: handle.write(buffer.getbuffer()),
                keep_previous=self.previous_checkpoint_path,
            )
        except OSError as err:  # a full disk, a quota, a vanished mount: the old file stands
            then = (
                f"the previous checkpoint is intact: make room, then continue with "
                f"resume={self.path}"
                if self.checkpoint_path.is_file()
                else "no checkpoint was saved: make room, then start again"
            )
            raise UserError(
                str(self.checkpoint_path), f"could not be saved ({err.strerror or err}); {then}"
            ) from None

    def load_checkpoint(self, path: Path | None = None) -> dict[str, Any]:
        """The last checkpoint (or the one at `path`), checked to be a gandiv checkpoint."""
        path = self.checkpoint_path if path is None else path
        if not path.is_file():
            raise UserError(str(path), "missing; this run has no checkpoint")
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            # torch's first sentence says what is wrong; the rest is advice meant for torch users
            reason = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                str(path),
                f"unreadable or corrupt checkpoint ({reason}); a gandiv checkpoint is needed, "
                "as written by gandiv train",
            ) from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise UserError(str(path), f"not a gandiv checkpoint (missing {', '.join(missing)})")
        return state

    def load_checkpoint_or_previous(self) -> tuple[dict[str, Any], str | None]:
        """The last checkpoint, or, when it is damaged, the previous one (`prev.pt`) with a
        one-line warning saying so (None: the last one was read)."""
        try:
            return self.load_checkpoint(), None
        except UserError as err:
            damaged = err
        if not self.previous_checkpoint_path.is_file():
            raise damaged
        try:
            state = self.load_checkpoint(self.previous_checkpoint_path)
        except UserError:
            raise damaged from None
        warning = (
            f"{damaged.where}: {damaged.message.split(';')[0]}; continuing from the previous "
            f"checkpoint, {self.previous_checkpoint_path} (step {state['step']})"
        )
        return state, warning

    def remove_stale_temporaries(self) -> None:
        """Remove the temporary files killed writers of this run left (of processes gone)."""
        for directory in (self.path, self.path / "checkpoints", self.path / ".hydra"):
            remove_stale_temporaries(directory)

    # final files --------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def status(self) -> str | None:
        """summary.json's ``status`` (completed, failed, interrupted), or None without one."""
        try:
            status = json.loads(self.summary_path.read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            return None
        return status if isinstance(status, str) else None

    def record_failure(self, error: str, exit_code: int, **fields: Any) -> None:
        """Note in summary.json why the run stopped (for sweep.csv), never over a completed
        run's."""
        if self.status() != "completed":
            summary = {**fields, "status": "failed", "exit_code": exit_code, "error": error}
            self.write_summary(summary)

    def save_samples(self, samples: np.ndarray) -> None:
        atomic_write(self.samples_path, lambda handle: np.save(handle, samples))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def write_text(self, relative: str, text: str) -> None:
        atomic_write_bytes(self.path / relative, text.encode())
