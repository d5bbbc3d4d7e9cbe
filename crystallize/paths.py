"""Names that become path segments (experiment, condition, step, artifact) must stay inside the store."""

from __future__ import annotations

import re

from .errors import ValidationError

_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_segment(name: str, what: str) -> str:
    """Return ``name`` if it is a safe single path segment, else raise naming ``what``."""
    if not isinstance(name, str) or not name or name in (".", "..") or _BAD.search(name) or name.strip() != name:
        raise ValidationError(
            f"{what} {name!r} cannot be used as a folder or file name: use a non-empty name without "
            "'/', '\\', control characters, surrounding spaces, or '.'/'..'"
        )
    return name


def check_relative(name: str, what: str) -> str:
    """Return ``name`` if it is a relative path of safe segments (``a/b.txt``), else raise."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} {name!r} must be a non-empty relative path")
    for part in name.split("/"):
        check_segment(part, what)
    return name
