"""The run directory: the one object that writes a run's files (README: "What a run leaves behind").

Every file that must survive a crash is written atomically: to a temporary file in the same
directory, flushed and fsync'ed, then `os.replace`d over the old one, so a reader (or a resumed
run) sees either the previous complete file or the new complete file, never a torn one.
`metrics.jsonl` is append-only; a checkpoint records its length, and a resumed run truncates it
back to that length so no step is logged twice.
"""

from __future__ import annotations

import io
import json
import math
import os
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


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` atomically: temp file, flush, fsync, `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):
            # the file the user knows (a full disk's write error names no file)
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    _fsync_dir(path.parent)


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
            atomic_write(self.checkpoint_path, lambda handle: handle.write(buffer.getbuffer()))
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

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint_path.is_file():
            raise UserError(str(self.checkpoint_path), "missing; this run has no checkpoint")
        try:
            state: dict[str, Any] = torch.load(
                self.checkpoint_path, map_location="cpu", weights_only=True
            )
        except Exception as err:
            # torch's first sentence says what is wrong; the rest is advice meant for torch users
            reason = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                str(self.checkpoint_path),
                f"unreadable or corrupt checkpoint ({reason}); a gandiv checkpoint is needed, "
                "as written by gandiv train",
            ) from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise UserError(
                str(self.checkpoint_path), f"not a gandiv checkpoint (missing {', '.join(missing)})"
            )
        return state

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
