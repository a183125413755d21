"""Generative models (Gaussian, RealNVP flow, implicit MLP generator) and critics."""

from gandiv.models.base import GenerativeModel
from gandiv.models.flow import AffineCoupling, CouplingFlow
from gandiv.models.gaussian import GaussianModel
from gandiv.models.linear import LinearGenerator
from gandiv.models.mlp import ACTIVATIONS, MLPCritic, MLPGenerator

__all__ = [
    "ACTIVATIONS",
    "AffineCoupling",
    "CouplingFlow",
    "GaussianModel",
    "GenerativeModel",
    "LinearGenerator",
    "MLPCritic",
    "MLPGenerator",
]
