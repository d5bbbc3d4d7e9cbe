"""Where the data and cache stores are: explicit argument, then environment, then the defaults."""

from __future__ import annotations

import os

from .filesystem import _is_uri

DATA_ENV = "CRYSTALLIZE_DATA_URI"
CACHE_ENV = "CRYSTALLIZE_CACHE_URI"
LEGACY_CACHE_ENV = "CRYSTALLIZE_CACHE_DIR"
NO_CACHE_ENV = "CRYSTALLIZE_NO_CACHE"


def cache_disabled() -> bool:
    """``CRYSTALLIZE_NO_CACHE=1`` turns the step cache off (cacheable steps just run)."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def absolute(location: str | os.PathLike[str]) -> str:
    """A location every process resolves the same way (local paths made absolute here, on the driver)."""
    text = os.fspath(location)
    return text if _is_uri(text) else os.path.abspath(text)


def data_location(explicit: str | os.PathLike[str] | None = None) -> str:
    return absolute(explicit if explicit is not None else os.environ.get(DATA_ENV, "data"))


def cache_location(explicit: str | os.PathLike[str] | None = None) -> str:
    if explicit is not None:
        return absolute(explicit)
    return absolute(os.environ.get(CACHE_ENV) or os.environ.get(LEGACY_CACHE_ENV) or ".cache")
