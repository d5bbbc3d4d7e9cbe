"""Compatibility path; the real code is in `crystallize.cache`."""

from crystallize.cache import CacheEntry, StepCache, cache_key

__all__ = ["StepCache", "CacheEntry", "cache_key"]
