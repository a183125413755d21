"""The commands of `gandiv`, one module each: train, evaluate (`gandiv eval`), plot, sweep.

Each is the thin layer where Hydra's config (validated by `gandiv.config`) and Hydra's state (the
job's output directory, overrides and logging) are read; everything it calls takes plain
arguments and objects. `gandiv.cli` dispatches to them.
"""
