"""A tiny CelebA-shaped copy for tests: face-like JPEGs and a partition file, in either layout;
the overrides of a tiny DCGAN run on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 178, 218  # the aligned CelebA image size
COUNTS = {"train": 24, "valid": 6, "test": 6}
N_IMAGES = sum(COUNTS.values())


def face(index: int) -> Image.Image:
    """A face-like 178×218 picture: a background gradient, a head, eyes, a mouth, some noise."""
    rng = np.random.default_rng(index)
    rows = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    background = (1 - rows) * top + rows * bottom + np.zeros((HEIGHT, WIDTH, 3))
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy = WIDTH / 2 + rng.uniform(-8, 8), HEIGHT / 2 + rng.uniform(-8, 8)
    skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [255, 200, 170]))
    draw.ellipse((cx - 50, cy - 65, cx + 50, cy + 65), fill=skin)
    hair = tuple(int(v) for v in rng.uniform(0, 120, 3))
    draw.chord((cx - 52, cy - 70, cx + 52, cy + 10), 180, 360, fill=hair)
    for side in (-1, 1):
        ex = cx + side * 20
        draw.ellipse((ex - 9, cy - 10, ex + 9, cy), fill=(250, 250, 250))
        draw.ellipse((ex - 4, cy - 8, ex + 4, cy - 2), fill=(40, 30, 20))
    draw.arc((cx - 22, cy + 15, cx + 22, cy + 40), 20, 160, fill=(150, 40, 50), width=4)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def names() -> list[tuple[str, int]]:
    codes = [0] * COUNTS["train"] + [1] * COUNTS["valid"] + [2] * COUNTS["test"]
    return [(f"{i + 1:06d}.jpg", code) for i, code in enumerate(codes)]


def make_copy(pristine: Path, root: Path, layout: str) -> Path:
    """Lay the tiny copy out under ``root``; returns the image folder."""
    if layout == "kaggle":
        base, images = root, root / "img_align_celeba" / "img_align_celeba"
        lines = ["image_id,partition"] + [f"{n},{c}" for n, c in names()]
        text, partition = "\r\n".join(lines) + "\r\n", "list_eval_partition.csv"
    else:
        base = root / "celeba"
        images = base / "img_align_celeba"
        text = "".join(f"{n} {c}\n" for n, c in names())
        partition = "list_eval_partition.txt"
    shutil.copytree(pristine, images)
    (base / partition).write_text(text)
    return images


def write_faces(folder: Path) -> Path:
    """The copy's JPEGs, once, in `folder` (copied into each layout by `make_copy`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, _) in enumerate(names()):
        face(i).save(folder / name, quality=90)
    return folder


SIZE = 16  # tiny images (a 16×16 DCGAN: two stride-2 layers) so that runs take seconds


def images(root: Path, *extra: str) -> list[str]:
    """Overrides of a tiny DCGAN image run (cache beside the copy, decoded in-process)."""
    return [
        "dataset=celeba",
        f"dataset.root={root}",
        f"dataset.size={SIZE}",
        "dataset.crop=100",
        "dataset.workers=0",
        "model=dcgan",
        "model.width=8",
        "model.latent_dim=16",
        "critic=dcgan",
        "critic.width=8",
        "trainer.batch_size=8",
        "trainer.lr=0.0002",
        "trainer.betas=[0.5,0.999]",
        "trainer.log_every=5",
        "trainer.num_samples=100",
        *extra,
    ]
