"""CelebA loading and caching on a tiny generated copy, and the DCGAN networks, on the CPU."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandiv.data import celeba
from gandiv.data.celeba import CelebA, ImageSampler, load_celeba, preprocess_image
from gandiv.data.images import ImageSplits
from gandiv.divergences import get_divergence
from gandiv.errors import UserError
from gandiv.models import MLPCritic, MLPGenerator
from gandiv.models.dcgan import DCGANCritic, DCGANGenerator
from gandiv.objectives.adversarial import VariationalDivergence

from .celeba_copy import COUNTS, HEIGHT, N_IMAGES, WIDTH, write_faces
from .celeba_copy import make_copy as _make_copy
from .celeba_copy import names as _names


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of the tiny copy's JPEGs, copied into each layout by the `copy` fixture."""
    return write_faces(tmp_path_factory.mktemp("faces"))


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A fresh torchvision-layout copy per test."""
    _make_copy(pristine, tmp_path / "data", "torchvision")
    return tmp_path / "data"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every image decoded in this process (workers=0)."""
    calls: list[str] = []
    original = celeba.preprocess_image

    def counting(path: str, crop: int, size: int) -> np.ndarray:
        calls.append(os.path.basename(path))
        return original(path, crop, size)

    monkeypatch.setattr(celeba, "preprocess_image", counting)
    return calls


def _pillow(path: Path, crop: int, size: int) -> np.ndarray:
    """The reference preprocessing, written out: centre crop box, then Pillow bilinear resize."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    left, top = (WIDTH - crop) // 2, (HEIGHT - crop) // 2
    square = rgb.crop((left, top, left + crop, top + crop))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR))


# --- layouts and partitions ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["torchvision", "torchvision-celeba-dir", "kaggle"])
def test_both_layouts_load_with_the_official_partitions(
    pristine: Path, tmp_path: Path, layout: str
) -> None:
    images = _make_copy(pristine, tmp_path / "data", layout.removesuffix("-celeba-dir"))
    given = tmp_path / "data" / "celeba" if layout.endswith("celeba-dir") else tmp_path / "data"
    data = load_celeba(given, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert data.layout.kind == layout.removesuffix("-celeba-dir")
    assert data.layout.image_dir == images
    assert data.images.shape == (N_IMAGES, 64, 64, 3) and data.images.dtype == np.uint8
    assert {name: len(data.split(name)) for name in COUNTS} == COUNTS
    # The rows of the test split are the images the partition file puts in it.
    test_names = [n for n, c in _names() if c == 2]
    assert data.names[-len(test_names) :] == test_names
    np.testing.assert_array_equal(data.split("test")[0], _pillow(images / test_names[0], 140, 64))


def test_partition_order_is_kept_within_each_split(root: Path, tmp_path: Path) -> None:
    partition = root / "celeba" / "list_eval_partition.txt"
    shuffled = _names()[::-1]  # test first, then valid, then train, each reversed
    partition.write_text("".join(f"{n} {c}\n" for n, c in shuffled))
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert data.names[: COUNTS["train"]] == [n for n, c in shuffled if c == 0]
    first = data.names[0]
    np.testing.assert_array_equal(
        data.split("train")[0], _pillow(root / "celeba" / "img_align_celeba" / first, 140, 64)
    )


# --- preprocessing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("crop", "size"), [(140, 64), (108, 64), (178, 64), (140, 32)])
def test_preprocessing_equals_a_direct_pillow_computation(
    pristine: Path, crop: int, size: int
) -> None:
    path = pristine / "000007.jpg"
    ours = preprocess_image(path, crop, size)
    assert ours.shape == (size, size, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, _pillow(path, crop, size))


def test_the_cache_holds_exactly_the_preprocessed_images(root: Path, tmp_path: Path) -> None:
    data = load_celeba(root, crop=108, size=32, cache_dir=tmp_path / "c", workers=0, progress=False)
    folder = root / "celeba" / "img_align_celeba"
    expected = np.stack([_pillow(folder / name, 108, 32) for name in data.names])
    np.testing.assert_array_equal(np.asarray(data.images), expected)


def test_parallel_decoding_writes_the_same_cache_as_serial(root: Path, tmp_path: Path) -> None:
    serial = load_celeba(root, cache_dir=tmp_path / "serial", workers=0, progress=False)
    parallel = load_celeba(root, cache_dir=tmp_path / "parallel", workers=2, progress=False)
    assert serial.cache_path.read_bytes()[4096:] == parallel.cache_path.read_bytes()[4096:]
    np.testing.assert_array_equal(np.asarray(serial.images), np.asarray(parallel.images))


# --- the cache -----------------------------------------------------------------------------------


def test_the_cache_is_built_once_then_memory_mapped(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    first = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == N_IMAGES
    stat = first.cache_path.stat()
    again = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == N_IMAGES  # nothing decoded the second time
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    assert again.cache_path == first.cache_path
    assert (again.cache_path.stat().st_ino, again.cache_path.stat().st_mtime_ns) == (
        stat.st_ino,
        stat.st_mtime_ns,
    )
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name] == []


def test_the_default_cache_lies_beside_the_images(root: Path, decodes: list[str]) -> None:
    data = load_celeba(root, workers=0, progress=False)
    assert data.cache_path.parent == root / "celeba"
    load_celeba(root, workers=0, progress=False)
    assert len(decodes) == N_IMAGES


@pytest.mark.parametrize(("crop", "size"), [(108, 64), (140, 32)])
def test_changed_preprocessing_builds_a_new_cache(
    root: Path, tmp_path: Path, decodes: list[str], crop: int, size: int
) -> None:
    before = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    after = load_celeba(root, crop, size, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == 2 * N_IMAGES
    assert after.cache_path != before.cache_path
    assert after.header["crop"] == crop and after.header["size"] == size
    assert after.images.shape == (N_IMAGES, size, size, 3)
    # Going back to the first settings reuses their cache.
    load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == 2 * N_IMAGES


def test_a_changed_partition_builds_a_new_cache(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    names = _names()
    names[0] = (names[0][0], 2)  # one training image moves to the test split
    partition = root / "celeba" / "list_eval_partition.txt"
    partition.write_text("".join(f"{n} {c}\n" for n, c in names))
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == 2 * N_IMAGES
    assert len(data.split("train")) == COUNTS["train"] - 1
    assert len(data.split("test")) == COUNTS["test"] + 1


def test_a_truncated_cache_is_rebuilt(root: Path, tmp_path: Path, decodes: list[str]) -> None:
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    good = data.cache_path.read_bytes()
    del data
    with open(tmp_path / "cache" / next(iter(_cache_files(tmp_path / "cache"))), "r+b") as f:
        f.truncate(len(good) - 1000)
    rebuilt = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == 2 * N_IMAGES
    data_bytes = rebuilt.cache_path.read_bytes()[rebuilt.header["data_offset"] :]
    assert len(data_bytes) == N_IMAGES * 64 * 64 * 3
    assert data_bytes == good[rebuilt.header["data_offset"] :]


def test_a_cache_with_a_broken_header_is_rebuilt(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    path = data.cache_path
    with open(path, "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xfe not json")
    load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert len(decodes) == 2 * N_IMAGES
    assert celeba.read_cache_header(path) is not None


def _cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_an_interrupted_build_leaves_no_cache_to_use(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = celeba.preprocess_image
    done: list[str] = []

    def dies_after_ten(path: str, crop: int, size: int) -> np.ndarray:
        if len(done) == 10:
            raise KeyboardInterrupt
        done.append(path)
        return original(path, crop, size)

    monkeypatch.setattr(celeba, "preprocess_image", dies_after_ten)
    with pytest.raises(KeyboardInterrupt):
        load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    assert _cache_files(tmp_path / "cache") == []  # no final file, and the temporary is gone
    monkeypatch.setattr(celeba, "preprocess_image", original)
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    np.testing.assert_array_equal(
        data.split("test")[-1],
        _pillow(root / "celeba" / "img_align_celeba" / data.names[-1], 140, 64),
    )


def test_a_leftover_temporary_file_is_ignored_and_removed(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    """A run killed mid-build (SIGKILL: no cleanup) leaves its temporary file behind."""
    entries = sorted(
        celeba.read_partition(root / "celeba" / "list_eval_partition.txt"), key=lambda e: e[1]
    )
    name = celeba.cache_file_name(140, 64, celeba.cache_key(140, 64, entries))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{name}.tmp12345").write_bytes(celeba.CACHE_MAGIC + b"\0" * 5000)
    data = load_celeba(root, cache_dir=cache, workers=0, progress=False)
    assert len(decodes) == N_IMAGES
    assert _cache_files(cache) == [name] == [data.cache_path.name]


def test_the_cache_header_describes_the_array(root: Path, tmp_path: Path) -> None:
    data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    raw = data.cache_path.read_bytes()
    assert raw.startswith(celeba.CACHE_MAGIC)
    header = data.header
    assert header["order"] == "NHWC" and header["dtype"] == "uint8"
    assert header["splits"] == {"train": [0, 24], "valid": [24, 30], "test": [30, 36]}
    assert header["data_offset"] % 4096 == 0
    assert len(raw) == header["data_offset"] + N_IMAGES * 64 * 64 * 3
    assert raw[header["data_offset"] :] == np.asarray(data.images).tobytes()


# --- user errors ---------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[UserError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_corrupt_images_are_counted_and_named(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    folder = root / "celeba" / "img_align_celeba"
    (folder / "000005.jpg").write_bytes(b"this is not a jpeg")
    jpeg = (folder / "000009.jpg").read_bytes()
    (folder / "000009.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated mid-scan
    (folder / "000020.jpg").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
    message = _one_line(err)
    assert err.value.where == str(folder)
    assert "3 of 36 images" in message
    assert message.index("000005.jpg") < message.index("000009.jpg") < message.index("000020.jpg")
    assert _cache_files(tmp_path / "cache") == []


def test_corrupt_images_found_by_the_worker_processes(root: Path, tmp_path: Path) -> None:
    folder = root / "celeba" / "img_align_celeba"
    for name in ("000002.jpg", "000031.jpg"):
        (folder / name).write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=r"2 of 36 images .*000002\.jpg.*000031\.jpg"):
        load_celeba(root, cache_dir=tmp_path / "cache", workers=2, progress=False)


def test_a_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_celeba(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert err.value.where == "dataset.root"
    message = _one_line(err)
    assert "does not exist" in message and "img_align_celeba" in message
    assert "never downloads" in message


def test_a_folder_without_celeba_is_a_wrong_layout(tmp_path: Path) -> None:
    (tmp_path / "data" / "images").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        load_celeba(tmp_path / "data", cache_dir=tmp_path / "cache")
    message = _one_line(err)
    assert "no CelebA images" in message
    assert "torchvision layout" in message and "Kaggle layout" in message


def test_an_empty_image_folder_is_named(tmp_path: Path) -> None:
    base = tmp_path / "data" / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    (base / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(UserError) as err:
        load_celeba(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert err.value.where == str(base / "img_align_celeba")
    assert "contains no .jpg images" in _one_line(err)


def test_a_missing_partition_file_is_named(root: Path, tmp_path: Path) -> None:
    (root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError) as err:
        load_celeba(root, cache_dir=tmp_path / "cache")
    assert err.value.where == str(root / "celeba" / "list_eval_partition.txt")
    assert "missing" in _one_line(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("000001.jpg 0\n000002.jpg 7\n", "line 2: expected"),
        ("000001.jpg 0\n000001.jpg 1\n", "line 2: 000001.jpg is listed twice"),
        ("000001.jpg 0 extra\n", "line 1: expected"),
        ("\n\n", "lists no images"),
        ("000001.jpg 0\n000099.jpg 2\n000098.jpg 2\n", "lists 2 images that are not in"),
        ("000001.jpg 0\n000002.jpg 1\n", "the test partition is empty"),
    ],
)
def test_an_inconsistent_partition_file_is_named(
    root: Path, tmp_path: Path, text: str, expected: str
) -> None:
    partition = root / "celeba" / "list_eval_partition.txt"
    partition.write_text(text)
    with pytest.raises(UserError) as err:
        load_celeba(root, cache_dir=tmp_path / "cache")
    assert err.value.where == str(partition)
    assert expected in _one_line(err)


def test_a_crop_larger_than_the_images_is_refused_before_decoding(
    root: Path, tmp_path: Path, decodes: list[str]
) -> None:
    with pytest.raises(UserError) as err:
        load_celeba(root, crop=200, cache_dir=tmp_path / "cache", workers=0)
    assert err.value.where == "dataset.crop"
    assert "at most 178" in _one_line(err)
    assert decodes == []


@pytest.mark.parametrize(("key", "value"), [("crop", 0), ("size", -1), ("workers", -2)])
def test_bad_settings_are_named(root: Path, tmp_path: Path, key: str, value: int) -> None:
    with pytest.raises(UserError) as err:
        load_celeba(root, cache_dir=tmp_path / "cache", **{key: value})  # type: ignore[arg-type]
    assert err.value.where == f"dataset.{key}"


def test_an_unwritable_cache_folder_is_named(root: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError) as err:
            load_celeba(root, cache_dir=locked)
        assert err.value.where == "dataset.cache_dir" and "not writable" in _one_line(err)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EOPNOTSUPP])
def test_disk_space_is_reserved_before_decoding(
    root: Path, tmp_path: Path, decodes: list[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fails(fd: int, offset: int, length: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", fails)
    if code == errno.ENOSPC:  # a full disk: one message, nothing decoded, nothing left behind
        with pytest.raises(UserError) as err:
            load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
        assert err.value.where == "dataset.cache_dir" and "not enough free space" in _one_line(err)
        assert decodes == [] and _cache_files(tmp_path / "cache") == []
    else:  # a file system that cannot reserve space: a sparse file does
        data = load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)
        assert len(decodes) == N_IMAGES and len(data.split("train")) == COUNTS["train"]


# --- batches -------------------------------------------------------------------------------------


@pytest.fixture
def copy_data(root: Path, tmp_path: Path) -> CelebA:
    return load_celeba(root, cache_dir=tmp_path / "cache", workers=0, progress=False)


@pytest.fixture
def train_images(copy_data: CelebA) -> np.ndarray:
    return copy_data.split("train")


def test_batches_are_images_in_unit_range_determined_by_the_seed(train_images: np.ndarray) -> None:
    sampler = ImageSampler(train_images, on_device=False)
    assert sampler.resident is None  # gathered from the memory map
    one = sampler.batch(8, torch.Generator().manual_seed(3))
    two = sampler.batch(8, torch.Generator().manual_seed(3))
    other = sampler.batch(8, torch.Generator().manual_seed(4))
    assert one.shape == (8, 3, 64, 64) and one.dtype == torch.float32
    assert torch.equal(one, two) and not torch.equal(one, other)
    assert one.min() >= -1 and one.max() <= 1 and one.min() < -0.5 and one.max() > 0.5
    assert one.is_contiguous(memory_format=torch.channels_last)
    # The batch is the images at the drawn indices, scaled x / 127.5 − 1.
    index = torch.randint(len(train_images), (8,), generator=torch.Generator().manual_seed(3))
    expected = torch.from_numpy(train_images[index.numpy()].astype(np.float32) / 127.5 - 1)
    torch.testing.assert_close(one, expected.permute(0, 3, 1, 2), rtol=0, atol=1e-6)


def test_on_device_sampling_draws_the_same_batches(train_images: np.ndarray) -> None:
    mapped = ImageSampler(train_images, "cpu", on_device=False)
    resident = ImageSampler(train_images, "cpu", on_device=True, chunk=5)  # several chunks
    assert resident.resident is not None
    assert torch.equal(resident.resident, torch.from_numpy(np.array(train_images)))
    for seed in range(3):
        a = mapped.batch(16, torch.Generator().manual_seed(seed))
        b = resident.batch(16, torch.Generator().manual_seed(seed))
        assert torch.equal(a, b)
    assert ImageSampler(train_images, "cpu").resident is None  # auto: on CUDA only


def test_batches_visit_every_image_once(train_images: np.ndarray) -> None:
    sampler = ImageSampler(train_images)
    chunks = list(sampler.batches(10))
    assert [len(c) for c in chunks] == [10, 10, 4]
    all_images = torch.cat(chunks)
    torch.testing.assert_close(all_images, sampler.take(torch.arange(len(train_images))))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_keeps_the_images_on_a_cuda_device(train_images: np.ndarray) -> None:
    sampler = ImageSampler(train_images, "cuda")
    assert sampler.resident is not None and sampler.resident.is_cuda
    batch = sampler.batch(8, torch.Generator("cuda").manual_seed(0))
    assert batch.is_cuda and batch.shape == (8, 3, 64, 64)
    cpu = ImageSampler(train_images, "cpu")
    index = torch.randint(len(train_images), (8,), generator=torch.Generator("cuda").manual_seed(0))
    torch.testing.assert_close(batch.cpu(), cpu.take(index.cpu()))


def test_cpu_training_draws_image_batches_with_the_training_generator(copy_data: CelebA) -> None:
    splits = ImageSplits(copy_data, torch.device("cpu"), on_device=False, seed=5)
    assert splits.host_generator is None and splits.state_dict() == {}
    generator = torch.Generator().manual_seed(1)
    before = generator.get_state()
    splits.batch(4, generator)
    assert not torch.equal(generator.get_state(), before)  # the batch came from this stream


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_resident_images_are_drawn_with_a_cpu_generator_on_cuda(copy_data: CelebA) -> None:
    """With the images in host memory (on_device=false) the indices never cross from the GPU:
    they are drawn by the splits' own CPU generator, which a checkpoint carries."""
    splits = ImageSplits(copy_data, torch.device("cuda"), on_device=False, seed=5)
    assert splits.images_device.type == "cpu"
    assert splits.host_generator is not None and splits.host_generator.device.type == "cpu"
    generator = torch.Generator("cuda").manual_seed(0)
    before = generator.get_state()
    saved = splits.state_dict()
    first = splits.batch(8, generator)
    assert first.is_cuda and first.shape == (8, 3, 64, 64)
    assert torch.equal(generator.get_state(), before)  # the CUDA stream is left to the model
    splits.load_state_dict(saved)
    assert torch.equal(splits.batch(8, generator), first)
    resident = ImageSplits(copy_data, torch.device("cuda"), on_device=True, seed=5)
    assert resident.host_generator is None  # on the GPU: drawn there with the training stream


# --- DCGAN ---------------------------------------------------------------------------------------


def _canonical_counts(nz: int, w: int) -> tuple[int, int]:
    """DCGAN's 64×64 parameter counts from its layer table (4×4 kernels, no conv biases)."""
    generator_convs = [(nz, 8 * w), (8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w), (w, 3)]
    generator_norms = [8 * w, 4 * w, 2 * w, w]
    critic_convs = [(3, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w), (8 * w, 1)]
    critic_norms = [2 * w, 4 * w, 8 * w]
    g = sum(a * b * 16 for a, b in generator_convs) + sum(2 * c for c in generator_norms)
    d = sum(a * b * 16 for a, b in critic_convs) + sum(2 * c for c in critic_norms)
    return g, d


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dcgan_parameter_counts_are_the_canonical_ones() -> None:
    g, d = _canonical_counts(100, 64)
    assert (g, d) == (3_576_704, 2_765_568)
    assert _count(DCGANGenerator()) == g
    assert _count(DCGANCritic()) == d
    assert (_count(DCGANGenerator(latent_dim=16, width=8)), _count(DCGANCritic(width=8))) == (
        _canonical_counts(16, 8)
    )
    # Without BatchNorm every convolution has a bias instead.
    biases = 64 + 128 + 256 + 512 + 1
    assert _count(DCGANCritic(batch_norm=False)) == d - 2 * (128 + 256 + 512) + biases


def test_dcgan_shapes_follow_the_mlp_interfaces() -> None:
    generator = torch.Generator().manual_seed(0)
    model = DCGANGenerator(latent_dim=16, width=8)
    critic = DCGANCritic(width=8)
    mlp_model, mlp_critic = MLPGenerator(dim=12), MLPCritic(dim=12)
    assert model.has_density is mlp_model.has_density is False
    assert model.dim == 3 * 64 * 64 and model.image_shape == (3, 64, 64)
    x = model.sample(5, generator)
    assert x.shape == (5, 3, 64, 64) and x.abs().max() <= 1
    assert model.generate(model.latent_sample(5, generator)).shape == x.shape
    assert critic(x).shape == mlp_critic(mlp_model.sample(5, generator)).shape == (5,)
    critic.eval()
    torch.testing.assert_close(critic(x.flatten(1)), critic(x))  # flattened images also work
    with pytest.raises(NotImplementedError, match="no density"):
        model.log_prob(x)
    small = DCGANGenerator(latent_dim=4, width=4, image_size=32)
    assert small.sample(2, generator).shape == (2, 3, 32, 32)
    assert DCGANCritic(width=4, image_size=32)(small.sample(2, generator)).shape == (2,)
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(image_size=48)


def test_dcgan_initialisation() -> None:
    model, critic = DCGANGenerator(), DCGANCritic()
    big = model.net[3].weight  # 512→256 transposed convolution, 2M weights
    assert abs(big.std().item() - 0.02) < 0.001 and abs(big.mean().item()) < 0.001
    norm = critic.net[3]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    assert abs(norm.weight.mean().item() - 1) < 0.01 and norm.weight.std().item() < 0.04


def test_spectral_norm_bounds_every_convolution() -> None:
    torch.manual_seed(0)
    critic = DCGANCritic(width=4, spectral_norm=True, batch_norm=False, channels_last=True)
    plain = DCGANCritic(width=4, batch_norm=False)
    x = torch.randn(1, 3, 64, 64)
    for _ in range(100):  # power iteration advances once per training-mode forward pass
        critic(x)
    convs = [m for m in critic.net if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and all(hasattr(m, "parametrizations") for m in convs)
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), 2)
        assert sigma.item() == pytest.approx(1.0, abs=0.005)
    plain_sigmas = [
        torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2).item()
        for m in plain.net
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert max(plain_sigmas) < 0.9  # so the test above could fail


def test_channels_last_models_compute_the_same_function() -> None:
    torch.manual_seed(0)
    model, critic = DCGANGenerator(latent_dim=8, width=4), DCGANCritic(width=4)
    fast_model = DCGANGenerator(latent_dim=8, width=4, channels_last=True)
    fast_critic = DCGANCritic(width=4, channels_last=True)
    fast_model.load_state_dict(model.state_dict())
    fast_critic.load_state_dict(critic.state_dict())
    assert all(
        p.is_contiguous(memory_format=torch.channels_last)
        for p in [*fast_model.parameters(), *fast_critic.parameters()]
        if p.dim() == 4
    )
    z = torch.randn(3, 8)
    x, fast_x = model.generate(z), fast_model.generate(z)
    assert fast_x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast_x, x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_critic(x), critic(x), rtol=1e-4, atol=1e-5)


def test_a_few_gan_steps_on_the_tiny_copy_move_both_networks(train_images: np.ndarray) -> None:
    torch.manual_seed(0)
    model = DCGANGenerator(latent_dim=16, width=4, channels_last=True)
    critic = DCGANCritic(width=4, spectral_norm=True, channels_last=True)
    objective = VariationalDivergence("ns_gan", critic, get_divergence("gan"), "nonsaturating")
    sampler = ImageSampler(train_images)
    generator = torch.Generator().manual_seed(0)
    optimiser_g = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimiser_d = torch.optim.Adam(objective.critic_parameters(), lr=2e-4, betas=(0.5, 0.999))
    before_g = [p.detach().clone() for p in model.parameters()]
    before_d = [p.detach().clone() for p in critic.parameters()]
    bounds = []
    for _ in range(3):
        critic_loss, metrics = objective.critic_loss(model, sampler.batch(8, generator), generator)
        optimiser_d.zero_grad()
        critic_loss.backward()
        optimiser_d.step()
        loss = objective.model_loss(model, sampler.batch(8, generator), generator)
        optimiser_g.zero_grad()
        loss.backward()
        optimiser_g.step()
        assert torch.isfinite(loss) and torch.isfinite(critic_loss)
        bounds.append(metrics["bound"].item())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, model.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, critic.parameters(), strict=True))
    assert bounds[-1] > bounds[0]  # the critic learns to tell the faces from the noise
