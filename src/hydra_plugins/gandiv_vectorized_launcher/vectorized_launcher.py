"""The `vectorized` launcher: a sweep's compatible jobs trained together as one computation.

It runs the sweep's jobs in this process like Hydra's basic launcher, except that each job that
can join a vectorised group is only validated and built (its run directory set up) when its turn
comes; after the last job, every group of such jobs — same shapes and cadences, differing only in
seeds and scalar hyper-parameters — is trained as one batched computation
(`gandiv.training.vectorized`), and each job still writes its own run directory with the numbers
it gets alone. Jobs that cannot be vectorised train one by one in their turn, as with `basic`.

This module is imported by Hydra's plugin discovery on every start: it imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn


class VectorizedLauncher(BasicLauncher):
    """Hydra's basic launcher, with gandiv's vectorisable jobs trained together at the end."""

    def __init__(self, max_group: int | str = "auto") -> None:
        super().__init__()
        valid = isinstance(max_group, int) and not isinstance(max_group, bool) and max_group >= 0
        if not valid and max_group != "auto":
            from gandiv.errors import UserError

            raise UserError(
                "hydra.launcher.max_group",
                f"must be auto or an integer ≥ 0 (0: no limit), got {max_group!r}",
            )
        self.max_group = None if max_group == "auto" else int(max_group)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from gandiv.cli import train_deferred
        from gandiv.training.groups import deferring

        with deferring() as pending:
            returns = super().launch(job_overrides, initial_job_idx)
        train_deferred(pending, self.max_group)
        return returns
