"""The package version, in a module of its own so internal modules never import the package for it."""

__version__ = "0.1.0"
