"""Image datasets for training and evaluation: CelebA behind the toy datasets' interfaces.

`ImageData` stands where a `ToyData` does when the data are images (`dim`, `has_density`,
`degenerate`), and reads the CelebA copy only when `load` is called, so that a refused
combination never decodes a dataset. `ImageSplits` gives the training loop the `ToySplits`
interface: ``batch(n, generator)`` draws from the train partition, and the test partition is
there for evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gandiv.data.celeba import CelebA, ImageSampler, load_celeba

CHANNELS = 3


def to_uint8_images(x: Tensor) -> np.ndarray:
    """Images (n, C, H, W) or flattened (n, C·H·W) in [−1, 1] → uint8 (n, H, W, C) for saving."""
    n = len(x)
    side = math.isqrt(x[0].numel() // CHANNELS)
    pixels = x.detach().float().reshape(n, CHANNELS, side, side).permute(0, 2, 3, 1)
    return pixels.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


@dataclass
class ImageData:
    """A CelebA copy as a dataset: no density is known, samples are (3, size, size) images."""

    name: str
    root: str
    crop: int
    size: int
    cache_dir: str | None
    workers: int | None
    on_device: Literal["auto"] | bool
    has_density: bool = False
    degenerate: bool = False

    @property
    def dim(self) -> int:
        """The flattened image size 3·size²."""
        return CHANNELS * self.size * self.size

    def load(self, progress: bool = True) -> CelebA:
        """The decoded copy (building its cache the first time; UserError for a bad copy)."""
        return load_celeba(
            self.root, self.crop, self.size, self.cache_dir, self.workers, progress=progress
        )


class ImageSplits:
    """Training batches from the train partition; the test partition for evaluation.

    ``batch(n, generator)`` is `ToySplits.batch`: n images (n, 3, H, W) in [−1, 1] on `device`,
    drawn with replacement. Where the images stay in host memory and training runs on a GPU
    (``on_device`` false), the indices are drawn on the CPU with a generator of the splits' own,
    seeded with `seed` and kept in `state_dict`, so that no index crosses from the GPU to the
    host (a sync point every step); otherwise with `generator`, which lives on `device`.
    """

    def __init__(
        self,
        data: CelebA,
        device: torch.device,
        on_device: Literal["auto"] | bool = "auto",
        seed: int = 0,
    ) -> None:
        self.data = data
        self.train = ImageSampler(data.split("train"), device, on_device)
        self.test_images = data.split("test")
        self.device = device
        host = self.images_device.type == "cpu" and torch.device(device).type != "cpu"
        self.host_generator = torch.Generator().manual_seed(seed) if host else None

    @property
    def images_device(self) -> torch.device:
        return self.train.images_device

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        return self.train.batch(n, self.host_generator or generator)

    def state_dict(self) -> dict[str, Any]:
        """The host generator's state, if there is one (each batch is drawn whole with it)."""
        return {} if self.host_generator is None else {"host": self.host_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.host_generator is not None:
            self.host_generator.set_state(state["host"])

    def test(self, limit: int | None = None) -> Tensor:
        """The first `limit` (None: all) test images as float (n, 3, H, W) in [−1, 1]."""
        images = self.test_images if limit is None else self.test_images[:limit]
        sampler = ImageSampler(images, self.device, on_device=False)
        return torch.cat(list(sampler.batches(4096)))
