"""The package version: the ground floor, importing nothing."""

__version__ = "0.1.0"
