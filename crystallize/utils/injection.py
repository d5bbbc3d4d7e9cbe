"""Compatibility path; the real code is in `crystallize.injection`."""

from crystallize.injection import inject_from_ctx

__all__ = ["inject_from_ctx"]
