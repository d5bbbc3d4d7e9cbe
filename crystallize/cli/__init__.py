"""The ``crystallize`` command line (``crystallize run|runs|show|export``); ``main`` is the entry point.

The CLI is the one place that configures logging handlers and prints; the library only logs.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
