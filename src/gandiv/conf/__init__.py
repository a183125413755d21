"""gandiv's Hydra configs, shipped inside the package so an installed `gandiv` finds them."""
