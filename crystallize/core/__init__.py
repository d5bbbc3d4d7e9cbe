"""Upstream-style ``crystallize.core`` paths (re-exports)."""
