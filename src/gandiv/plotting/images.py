"""Image grids: model samples of an image dataset as one mosaic, and an animation of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from gandiv.plotting.style import new_figure

PAD = 2  # pixels of white between images


def image_grid(images: np.ndarray, nrow: int = 8) -> np.ndarray:
    """Tile images (n, H, W, C), uint8 or float in [0, 1], C = 1 or 3, into one float RGB
    mosaic with `nrow` images per row (as torchvision's make_grid) and `PAD` white pixels apart."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (n, H, W, 1 or 3), got {array.shape}")
    pixels = array / 255.0 if array.dtype == np.uint8 else np.clip(array.astype(float), 0, 1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    n, height, width, _ = pixels.shape
    columns = max(1, min(nrow, n))
    rows = -(-n // columns)
    mosaic = np.ones((rows * (height + PAD) + PAD, columns * (width + PAD) + PAD, 3))
    padded = np.ones((rows * columns, height + PAD, width + PAD, 3))
    padded[:n, :height, :width] = pixels
    tiles = padded.reshape(rows, columns, height + PAD, width + PAD, 3).swapaxes(1, 2)
    mosaic[PAD:, PAD:] = tiles.reshape(rows * (height + PAD), columns * (width + PAD), 3)
    return mosaic


def image_grid_figure(images: np.ndarray, nrow: int = 8, title: str = "") -> Figure:
    """Images (n, H, W, C) as one grid with `nrow` images per row, under `title`."""
    mosaic = image_grid(images, nrow)
    aspect = mosaic.shape[1] / mosaic.shape[0]
    width = float(np.clip(1.0 * min(nrow, len(images)), 4.0, 10.0))
    fig = new_figure(width, round(width / aspect + 0.6, 1))
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def write_image_animation(
    frames: Sequence[tuple[int, np.ndarray]], path: Path, nrow: int = 4, ms_per_frame: int = 400
) -> None:
    """A GIF of image grids, one per (step, images (n, H, W, C)) frame, each labelled with its
    step in the corner."""
    pictures = []
    for step, images in frames:
        mosaic = (image_grid(images, nrow) * 255).round().astype(np.uint8)
        picture = Image.fromarray(mosaic)
        ImageDraw.Draw(picture).text((PAD + 1, PAD), f"step {step}", fill=(255, 255, 0))
        pictures.append(picture.convert("P", palette=Image.Palette.ADAPTIVE))
    pictures[0].save(
        path, format="GIF", save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0
    )
