"""Compatibility path; the real code is in `crystallize.treatment`."""

from crystallize.treatment import Treatment

__all__ = ["Treatment"]
