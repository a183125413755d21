"""Training batches and the held-out split drawn from a toy distribution."""

from __future__ import annotations

import torch
from torch import Tensor

from gandiv.data.toy import ToyData


class ToySplits:
    """A seeded held-out split that training never sees, and the training batches.

    The held-out sample (`test`) is drawn first from a generator seeded with `seed`; with
    `n_train` set, a fixed training set is drawn next from the same stream and batches are drawn
    from it with replacement; with `n_train=None` every batch is a fresh sample of the
    distribution (the infinite-data regime in which the divergences are defined).
    """

    def __init__(self, data: ToyData, n_train: int | None, n_test: int, seed: int) -> None:
        self.data = data
        stream = torch.Generator().manual_seed(seed)
        self.test = data.sample(n_test, stream)
        self.train = data.sample(n_train, stream) if n_train is not None else None

    def to(self, device: torch.device) -> ToySplits:
        self.test = self.test.to(device)
        if self.train is not None:
            self.train = self.train.to(device)
        return self

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """One training batch of `n` points, drawn with `generator`."""
        if self.train is None:
            return self.data.sample(n, generator)
        index = torch.randint(len(self.train), (n,), generator=generator, device=generator.device)
        return self.train[index]
