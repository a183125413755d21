"""gandiv's `vectorized` Hydra launcher (`gandiv train -m hydra/launcher=vectorized ...`)."""
