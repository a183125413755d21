"""One writer per run directory (or sweep root): an OS-level lock (`fcntl.flock`) on the
directory's `.lock` file, which names the holder's PID while it is held and is removed when it is
released. The kernel releases the lock of a killed process; the next holder reuses its file.

Imports no torch: `gandiv.run_dirs` takes these locks before Hydra starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from gandiv.errors import UserError

LOCK_NAME = ".lock"
# The directories this process holds locked: their resolved path → the lock file's descriptor.
_HELD: dict[Path, int] = {}


def lock_directory(path: Path | str) -> None:
    """Take the one-writer lock of a run or sweep directory (which must exist) for this process,
    or refuse with one line naming the process that holds it. Held until `release_locks` (or
    the process's end: the kernel releases it even after SIGKILL, whose `.lock` file the next
    holder reuses)."""
    directory = Path(path).resolve()
    if directory in _HELD:
        return
    lock = directory / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(str(path), f"{err.strerror or err}; choose a writable place") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(
                str(path),
                f"in use by another gandiv process (PID {holder}); one process writes a run "
                "directory at a time: wait for it to end",
            ) from None
        try:  # the file may have been removed by its last holder between open and flock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[directory] = fd


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def holds_lock(path: Path | str) -> bool:
    """Whether this process holds the lock of `path`."""
    return Path(path).resolve() in _HELD


def release_lock(path: Path | str) -> None:
    """Release the lock of `path` if this process holds it, removing its `.lock` file."""
    fd = _HELD.pop(Path(path).resolve(), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        (Path(path).resolve() / LOCK_NAME).unlink(missing_ok=True)
    os.close(fd)


def release_locks() -> None:
    """Release every lock this process holds (a command's end)."""
    for directory in list(_HELD):
        release_lock(directory)
