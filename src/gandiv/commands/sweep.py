"""`gandiv sweep summarize DIR`: rebuild a finished sweep's summary files (`gandiv.sweep`).

Not a Hydra app: a sweep's jobs hold their own configs, and the summary reads their directories.
The arguments are checked before anything heavy is imported, so usage errors and ``--help`` stay
fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gandiv.errors import UserError

USAGE = """\
usage: gandiv sweep summarize DIR

Rebuild the summary files of the finished sweep in DIR from its jobs' directories, e.g. of a
sweep copied back from a cluster: sweep.csv (one row per job), seeds.csv (when trainer.seed was
swept), table.csv and table.md (the comparison table, where it applies) and sweep.png.
"""


def sweep(args: Sequence[str]) -> None:
    """`gandiv sweep ARGS`: the summary files, or the usage for ``--help``."""
    if any(arg in ("-h", "--help") for arg in args):
        sys.stdout.write(USAGE)
        return
    if len(args) != 2 or args[0] != "summarize":
        raise UserError("", "usage: gandiv sweep summarize DIR")
    root = Path(args[1])
    if not root.is_dir() or not any(root.glob("*/.hydra/overrides.yaml")):
        raise UserError(str(root), "not a gandiv sweep directory (no */.hydra/overrides.yaml)")
    if not os.access(root, os.W_OK):
        raise UserError(
            str(root), "is read-only; make the sweep directory writable to summarize it"
        )
    from gandiv.sweep import describe, write_sweep_summary  # (imports torch and matplotlib)

    sys.stdout.write(describe(root, write_sweep_summary(root)))
