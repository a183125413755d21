"""CelebA aligned faces from a local copy, decoded once into a memory-mapped uint8 cache.

Layouts read (``root`` is what the user gives as ``dataset.root``):

- torchvision's: ``root/celeba/img_align_celeba/*.jpg`` and ``root/celeba/list_eval_partition.txt``
  (``root`` may also be the ``celeba`` folder itself);
- Kaggle's: ``root/img_align_celeba/img_align_celeba/*.jpg`` and ``root/list_eval_partition.csv``.

The partition file is the official split (Liu et al. 2015): 0 train, 1 valid, 2 test. Every image
is centre-cropped to ``crop``×``crop`` pixels (left = (W − crop) // 2, top = (H − crop) // 2), then
resized to ``size``×``size`` with Pillow's bilinear filter, and stored in one cache file:

    bytes 0–19      CACHE_MAGIC, b"GANDIV-CELEBA-CACHE\\n"
    bytes 20–27     L, the length of the JSON header (unsigned, little-endian)
    bytes 28–28+L   the JSON header: format, key, crop, size, resample, shape [N, size, size, 3],
                    dtype "uint8", order "NHWC", data_offset, splits {name: [start, stop]}, ...
    data_offset…    N×size×size×3 bytes: the images, train then valid then test (each split in
                    the partition file's order), data_offset a multiple of 4096

Rows are images in NHWC order: what Pillow decodes, one contiguous block per image, and a batch
of them permuted to NCHW is already in the channels-last memory format that convolutions prefer.
The file's name carries the key, a hash of the preprocessing settings and of the partition's file
list, so changing either builds a new cache (the old one stays for when the settings come back).
It is written to a temporary file and renamed into place only when complete; a cache whose magic,
header, key or size is wrong is never used, but rebuilt. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from gandiv.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")  # partition codes 0, 1, 2
CACHE_MAGIC = b"GANDIV-CELEBA-CACHE\n"
CACHE_FORMAT = 1  # bump when the file layout or the preprocessing changes meaning
DATA_ALIGN = 4096
RESAMPLE = "bilinear"
IMAGE_DIR = "img_align_celeba"
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
BAD_NAMES_SHOWN = 3  # corrupt images named in the message
_LENGTH = struct.Struct("<Q")


# --- where the data is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CelebALayout:
    """Where one local CelebA copy keeps its images and its partition file."""

    kind: Literal["torchvision", "kaggle"]
    base: Path  # the folder holding img_align_celeba and the partition file
    image_dir: Path  # the folder holding the .jpg files
    partition_file: Path


def _expected(root: Path) -> str:
    return (
        f"expected '{root / 'celeba' / IMAGE_DIR}/*.jpg' with 'list_eval_partition.txt' beside it "
        f"(torchvision layout) or '{root / IMAGE_DIR / IMAGE_DIR}/*.jpg' with "
        f"'{root / 'list_eval_partition.csv'}' (Kaggle layout)"
    )


def find_layout(root: str | os.PathLike[str], where: str = "dataset.root") -> CelebALayout:
    """Locate the images and the partition file of the CelebA copy at ``root``.

    ``where`` names the setting that gave ``root`` in error messages.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(
            where, f"'{root}' does not exist; {_expected(root)}. gandiv never downloads CelebA"
        )
    if not root.is_dir():
        raise UserError(where, f"'{root}' is not a directory; {_expected(root)}")
    for base in (root / "celeba", root):
        images = base / IMAGE_DIR
        if not images.is_dir():
            continue
        nested = images / IMAGE_DIR
        kind: Literal["torchvision", "kaggle"] = "kaggle" if nested.is_dir() else "torchvision"
        image_dir = nested if nested.is_dir() else images
        for name in PARTITION_FILES:
            if (base / name).is_file():
                return CelebALayout(kind, base, image_dir, base / name)
        raise UserError(
            str(base / PARTITION_FILES[0]),
            f"missing: the official partition file list_eval_partition.txt (or .csv) is "
            f"expected in '{base}', beside '{IMAGE_DIR}'",
        )
    raise UserError(where, f"no CelebA images under '{root}': {_expected(root)}")


def read_partition(path: Path) -> list[tuple[str, int]]:
    """The (image name, partition 0/1/2) pairs of a list_eval_partition .txt or .csv file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(str(path), f"unreadable partition file ({err})") from None
    if path.suffix == ".csv":
        rows = [[cell.strip() for cell in row] for row in csv.reader(text.splitlines())]
    else:
        rows = [line.split() for line in text.splitlines()]
    entries: list[tuple[str, int]] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if not row or not any(row):
            continue
        if number == 1 and len(row) == 2 and not row[1].isdigit():
            continue  # the Kaggle header: image_id,partition
        if len(row) != 2 or row[1] not in ("0", "1", "2") or not row[0]:
            raise UserError(
                str(path),
                f"line {number}: expected '<image>.jpg <partition 0|1|2>', got {' '.join(row)!r}",
            )
        if row[0] in seen:
            raise UserError(str(path), f"line {number}: {row[0]} is listed twice")
        seen.add(row[0])
        entries.append((row[0], int(row[1])))
    if not entries:
        raise UserError(str(path), "lists no images")
    return entries


def check_partition(layout: CelebALayout, entries: Sequence[tuple[str, int]]) -> None:
    """Check that the image folder holds .jpg files and every image the partition lists."""
    try:
        present = {e.name for e in os.scandir(layout.image_dir) if e.is_file()}
    except OSError as err:
        raise UserError(str(layout.image_dir), f"unreadable ({err})") from None
    if not any(name.lower().endswith(".jpg") for name in present):
        raise UserError(
            str(layout.image_dir), "contains no .jpg images; expected the aligned CelebA faces"
        )
    missing = [name for name, _ in entries if name not in present]
    if missing:
        raise UserError(
            str(layout.partition_file),
            f"lists {len(missing)} images that are not in '{layout.image_dir}' "
            f"(first: {', '.join(missing[:BAD_NAMES_SHOWN])}); is the copy complete?",
        )
    counts = [sum(1 for _, p in entries if p == code) for code in range(len(SPLITS))]
    empty = [SPLITS[code] for code in (0, 2) if counts[code] == 0]
    if empty:
        raise UserError(
            str(layout.partition_file),
            f"the {' and '.join(empty)} partition is empty (partition codes: 0 train, 2 test)",
        )


# --- preprocessing -------------------------------------------------------------------------------


def crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the centre ``crop``×``crop`` square."""
    left, top = (width - crop) // 2, (height - crop) // 2
    return left, top, left + crop, top + crop


def preprocess_image(path: str | os.PathLike[str], crop: int, size: int) -> np.ndarray:
    """One image as (size, size, 3) uint8: RGB, centre crop ``crop``, bilinear resize to ``size``.

    Raises ValueError when the image is smaller than the crop, OSError when it cannot be decoded.
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB")  # decodes the whole file: a truncated JPEG fails here
    if crop > min(rgb.size):
        raise ValueError(f"{rgb.size[0]}×{rgb.size[1]} is smaller than the {crop}×{crop} crop")
    square = rgb.crop(crop_box(*rgb.size, crop))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _decode_into(
    cache: str,
    offset: int,
    shape: tuple[int, ...],
    start: int,
    paths: Sequence[str],
    crop: int,
    size: int,
) -> list[tuple[str, str]]:
    """Decode ``paths`` into rows start… of the cache file; return the (name, reason) of failures.

    Runs in the worker processes: each writes its rows straight into the shared file.
    """
    rows = np.memmap(cache, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
    bad: list[tuple[str, str]] = []
    for i, path in enumerate(paths):
        try:
            rows[start + i] = preprocess_image(path, crop, size)
        except UnidentifiedImageError:
            bad.append((os.path.basename(path), "not a decodable image"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            reason = str(err).splitlines()[0].replace(path, "") if str(err) else ""
            bad.append((os.path.basename(path), reason or type(err).__name__))
    rows.flush()
    del rows
    return bad


def _pool_context() -> multiprocessing.context.BaseContext:
    # The workers use only Pillow and numpy, so forking is safe and starts in milliseconds;
    # where fork is unavailable (Windows) or unsafe (macOS), spawn.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# --- the cache file ------------------------------------------------------------------------------


def cache_key(crop: int, size: int, entries: Sequence[tuple[str, int]]) -> str:
    """The hash that names a cache: preprocessing settings and the (name, partition) list."""
    digest = hashlib.sha256()
    settings = {"format": CACHE_FORMAT, "crop": crop, "size": size, "resample": RESAMPLE}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, code in entries:
        digest.update(f"\n{name}\t{code}".encode())
    return digest.hexdigest()


def cache_file_name(crop: int, size: int, key: str) -> str:
    return f"gandiv-celeba-crop{crop}-size{size}-{key[:16]}.u8"


def read_cache_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a complete cache file, or None (the reason logged) if it is not one."""
    try:
        with path.open("rb") as file:
            if file.read(len(CACHE_MAGIC)) != CACHE_MAGIC:
                raise ValueError("not a gandiv CelebA cache")
            raw = file.read(_LENGTH.size)
            (length,) = _LENGTH.unpack(raw) if len(raw) == _LENGTH.size else (0,)
            if not 0 < length <= DATA_ALIGN * 16:
                raise ValueError("bad header length")
            header = json.loads(file.read(length).decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT:
            raise ValueError("another cache format")
        expected = header["data_offset"] + int(np.prod(header["shape"]))
        actual = path.stat().st_size
        if actual != expected:
            raise ValueError(f"{actual} bytes where the header promises {expected} (truncated?)")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.info("not using %s: %s", path, err)
        return None
    return header


def _header_bytes(header: dict[str, Any]) -> bytes:
    """Magic, length and JSON header, zero-padded to the data offset (written into the header)."""
    offset = DATA_ALIGN
    while True:
        text = json.dumps({**header, "data_offset": offset}, indent=1).encode()
        prefix = CACHE_MAGIC + _LENGTH.pack(len(text)) + text
        if len(prefix) <= offset:
            return prefix + b"\0" * (offset - len(prefix))
        offset += DATA_ALIGN


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX): concurrent runs build one cache, not two."""
    try:
        import fcntl
    except ImportError:  # no advisory locks: concurrent builds are wasteful but still correct
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _allocate(path: Path, prefix: bytes, length: int) -> None:
    """Create ``path`` with ``prefix`` and room for the images, reserving the disk space up front.

    Writing into a memory map beyond the space a full disk has left kills the writer (SIGBUS);
    reserving the blocks first turns that into one message before any decoding.
    """
    with path.open("wb") as file:
        file.write(prefix)
        file.flush()
        try:
            os.posix_fallocate(file.fileno(), 0, length)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise UserError(
                    "dataset.cache_dir",
                    f"not enough free space in '{path.parent}' for the CelebA cache "
                    f"({length / 1e9:.2f} GB); free some or point dataset.cache_dir elsewhere",
                ) from None
            file.truncate(length)  # the file system cannot reserve space: a sparse file
        except AttributeError:  # no posix_fallocate (macOS, Windows)
            file.truncate(length)


def _build_cache(
    path: Path,
    header: dict[str, Any],
    paths: Sequence[str],
    crop: int,
    size: int,
    workers: int,
    progress: bool,
) -> None:
    """Decode every image into a temporary file, then rename it to ``path``."""
    for stale in path.parent.glob(path.name + ".tmp*"):
        stale.unlink(missing_ok=True)  # left by a run that died; we hold the lock for this key
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    prefix = _header_bytes(header)
    offset = len(prefix)
    shape = tuple(header["shape"])
    started = time.perf_counter()
    bad: list[tuple[str, str]] = []
    try:
        _allocate(temporary, prefix, offset + int(np.prod(shape)))
        chunk = max(1, min(256, -(-len(paths) // (4 * max(1, workers)))))
        chunks = [(start, paths[start : start + chunk]) for start in range(0, len(paths), chunk)]
        bar = tqdm(
            total=len(paths),
            desc="decode celeba",
            unit="img",
            disable=None if progress else True,
            dynamic_ncols=True,
        )
        with bar:
            if workers <= 1:
                for start, part in chunks:
                    bad += _decode_into(str(temporary), offset, shape, start, part, crop, size)
                    bar.update(len(part))
            else:
                with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                    pending: dict[Future[list[tuple[str, str]]], int] = {
                        pool.submit(
                            _decode_into, str(temporary), offset, shape, start, part, crop, size
                        ): len(part)
                        for start, part in chunks
                    }
                    try:
                        while pending:
                            done, _ = wait(pending, return_when=FIRST_COMPLETED)
                            for future in done:
                                bad += future.result()
                                bar.update(pending.pop(future))
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        if bad:
            bad.sort()
            shown = ", ".join(f"{name} ({reason})" for name, reason in bad[:BAD_NAMES_SHOWN])
            raise UserError(
                str(Path(paths[0]).parent),
                f"{len(bad)} of {len(paths)} images are unreadable, corrupt or smaller than the "
                f"{crop}×{crop} crop (first: {shown}); replace them from a good copy",
            )
        with temporary.open("r+b") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        with contextlib.suppress(OSError):  # make the rename itself durable where supported
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        temporary.unlink(missing_ok=True)
    log.info(
        "decoded %d CelebA images into %s in %.1f s",
        len(paths),
        path,
        time.perf_counter() - started,
    )


# --- the dataset ---------------------------------------------------------------------------------


@dataclass
class CelebA:
    """The preprocessed images of one CelebA copy: a read-only (N, size, size, 3) uint8 memmap."""

    images: np.ndarray  # every partition, train then valid then test; NHWC
    splits: dict[str, tuple[int, int]]  # name → [start, stop) rows of `images`
    names: list[str]  # file name of each row
    layout: CelebALayout
    cache_path: Path
    header: dict[str, Any]

    def split(self, name: str) -> np.ndarray:
        """The rows of one partition (``train``, ``valid`` or ``test``), a view of the memmap."""
        start, stop = self.splits[name]
        return self.images[start:stop]


def _check_positive(where: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(where, f"must be a positive integer, got {value!r}")


def _check_crop(first: Path, crop: int) -> None:
    """Refuse a crop larger than the (first) image before decoding them all."""
    try:
        with Image.open(first) as image:
            width, height = image.size
    except (OSError, SyntaxError):
        return  # reported with the other unreadable images
    if crop > min(width, height):
        raise UserError(
            "dataset.crop",
            f"{crop} is larger than the images ({first.name} is {width}×{height}); "
            f"the centre crop must be at most {min(width, height)}",
        )


def load_celeba(
    root: str | os.PathLike[str],
    crop: int = 140,
    size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CelebA:
    """Open the CelebA copy at ``root``, decoding it into the cache first if needed.

    ``cache_dir`` holds the cache (default: beside the images); ``workers`` decoding processes
    (default: every usable core; 0 or 1 decode in this process); ``progress`` shows a progress bar
    on terminals. Errors in the copy raise UserError naming the path at fault.
    """
    _check_positive("dataset.crop", crop)
    _check_positive("dataset.size", size)
    if workers is not None and (isinstance(workers, bool) or workers < 0):
        raise UserError(
            "dataset.workers", f"must be ≥ 0 (0: decode in this process), got {workers}"
        )
    layout = find_layout(root)
    listed = read_partition(layout.partition_file)
    # Each split is one contiguous range of rows: stable-sort by partition code.
    entries = sorted(listed, key=lambda entry: entry[1])
    key = cache_key(crop, size, entries)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else layout.base
    where = "dataset.cache_dir"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            where, f"cannot create '{directory}' for the CelebA cache ({err})"
        ) from None
    path = directory / cache_file_name(crop, size, key)
    header = read_cache_header(path)
    if header is None or header.get("key") != key:
        if not os.access(directory, os.W_OK):
            raise UserError(
                where,
                f"'{directory}' is not writable; set dataset.cache_dir to a writable folder for "
                f"the decoded CelebA cache (about {len(entries) * size * size * 3 / 1e9:.1f} GB)",
            )
        with _exclusive(path.with_name(path.name + ".lock")):
            header = read_cache_header(path)  # another run may have built it while we waited
            if header is None or header.get("key") != key:
                check_partition(layout, entries)
                _check_crop(layout.image_dir / entries[0][0], crop)
                counts = [sum(1 for _, p in entries if p == code) for code in range(len(SPLITS))]
                bounds = np.cumsum([0, *counts]).tolist()
                new_header = {
                    "format": CACHE_FORMAT,
                    "key": key,
                    "crop": crop,
                    "size": size,
                    "resample": RESAMPLE,
                    "shape": [len(entries), size, size, 3],
                    "dtype": "uint8",
                    "order": "NHWC",
                    "splits": {s: bounds[i : i + 2] for i, s in enumerate(SPLITS)},
                    "source": str(layout.image_dir),
                    "partition_file": str(layout.partition_file),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                n_workers = default_workers() if workers is None else workers
                paths = [str(layout.image_dir / name) for name, _ in entries]
                _build_cache(path, new_header, paths, crop, size, n_workers, progress)
                header = read_cache_header(path)
                if header is None:
                    raise OSError(f"the CelebA cache {path} was written but cannot be read back")
    images = np.memmap(
        path,
        dtype=np.uint8,
        mode="r",
        offset=header["data_offset"],
        shape=tuple(header["shape"]),
    )
    splits = {name: (int(a), int(b)) for name, (a, b) in header["splits"].items()}
    return CelebA(images, splits, [n for n, _ in entries], layout, path, header)


# --- batches -------------------------------------------------------------------------------------


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 NHWC images → float32 NCHW in [−1, 1] (x / 127.5 − 1), in channels-last memory."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class ImageSampler:
    """Random training batches (with replacement) from a uint8 NHWC image array.

    With ``on_device`` the whole array is copied once to ``device`` and batches are gathered there,
    so a step costs no host work or transfer; ``"auto"`` does so on CUDA devices only. Otherwise
    batches are gathered from the (memory-mapped) array on the CPU and then moved to ``device``.
    Indices are drawn with the generator passed to `batch`, on that generator's device: give one on
    the images' device (`images_device`) so that no index has to cross between devices.
    """

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device | str = "cpu",
        on_device: bool | Literal["auto"] = "auto",
        chunk: int = 4096,
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}"
            )
        if len(images) == 0:
            raise ValueError("no images to sample from")
        if on_device not in (True, False, "auto"):
            raise ValueError(f"on_device must be true, false or auto, got {on_device!r}")
        self.device = torch.device(device)
        self.images = images
        self.on_device = self.device.type == "cuda" if on_device == "auto" else bool(on_device)
        self.resident: Tensor | None = None
        if self.on_device:  # copied in chunks: never a second full copy in host memory
            self.resident = torch.empty(images.shape, dtype=torch.uint8, device=self.device)
            for start in range(0, len(images), chunk):
                part = torch.from_numpy(np.array(images[start : start + chunk]))
                self.resident[start : start + chunk].copy_(part)

    @property
    def images_device(self) -> torch.device:
        """Where the images are gathered: ``device`` with on_device, else the CPU."""
        return self.resident.device if self.resident is not None else torch.device("cpu")

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: Tensor) -> Tensor:
        """The images at ``index`` as float32 (len(index), 3, H, W) in [−1, 1] on ``device``."""
        if self.resident is not None:
            return to_unit_range(self.resident[index.to(self.resident.device)])
        rows = torch.from_numpy(self.images[index.cpu().numpy()])
        return to_unit_range(rows.to(self.device, non_blocking=True))

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` images drawn uniformly with replacement using ``generator``."""
        index = torch.randint(len(self), (n,), generator=generator, device=generator.device)
        return self.take(index)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Every image once, in order, in batches of ``batch_size`` (the last may be smaller)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield self.take(torch.arange(start, stop, device=self.images_device))
