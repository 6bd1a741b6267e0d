"""Core of the LipSim robustness suite: types, registries, datasets, scoring, certification, store."""

__version__ = "0.2.0"
