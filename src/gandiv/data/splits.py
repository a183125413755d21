"""Training batches and the held-out split drawn from a toy distribution."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gandiv.data.toy import ToyData

# Training points drawn at once (whole batches, at least one): a draw costs about ten operators
# whatever its size, so small batches are drawn many at a time and handed out one by one.
CHUNK_POINTS = 16_384


class ToySplits:
    """A seeded held-out split that training never sees, and the training batches.

    The held-out sample (`test`) is drawn first from a generator seeded with `seed`; with
    `n_train` set, a fixed training set is drawn next from the same stream and batches are drawn
    from it with replacement; with `n_train=None` every batch is a fresh sample of the
    distribution (the infinite-data regime in which the divergences are defined).

    Batches are drawn `CHUNK_POINTS // n` at a time and kept until used: the points not yet handed
    out are part of the training state (`state_dict`, stored in every checkpoint), so a resumed
    run sees the same batches as an uninterrupted one.
    """

    def __init__(self, data: ToyData, n_train: int | None, n_test: int, seed: int) -> None:
        self.data = data
        stream = torch.Generator().manual_seed(seed)
        self.test = data.sample(n_test, stream)
        self.train = data.sample(n_train, stream) if n_train is not None else None
        self.pending: Tensor | None = None  # drawn, not yet handed out

    def to(self, device: torch.device) -> ToySplits:
        self.test = self.test.to(device)
        if self.train is not None:
            self.train = self.train.to(device)
        if self.pending is not None:
            self.pending = self.pending.to(device)
        return self

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """`n` training points drawn with `generator` now (no chunking)."""
        if self.train is None:
            return self.data.sample(n, generator)
        index = torch.randint(len(self.train), (n,), generator=generator, device=generator.device)
        return self.train[index]

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """One training batch of `n` points, drawn with `generator` (in chunks of batches)."""
        if self.pending is None or len(self.pending) < n:
            chunk = self.draw(n * max(1, CHUNK_POINTS // max(n, 1)), generator)
            self.pending = chunk if self.pending is None else torch.cat([self.pending, chunk])
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def state_dict(self) -> dict[str, Any]:
        """The points drawn but not yet handed out (what exact resumption needs besides the RNG)."""
        return {"pending": None if self.pending is None else self.pending.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pending = state.get("pending")
        self.pending = None if pending is None else pending.to(self.test.device)
