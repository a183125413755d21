"""gandiv: which divergence does a generative model minimise?"""

__version__ = "0.1.0"
