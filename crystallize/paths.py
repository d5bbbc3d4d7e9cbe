"""Names that become path segments (experiment, condition, step, artifact) must stay inside the store.

A name is accepted only if every backend can both store it and open it again by the same
name: a local folder (Linux, macOS, Windows) and an object store addressed by URI. So beyond
the characters that would leave the store (``/``, ``\\``, ``.``/``..``, control characters),
it refuses ``?``, ``#`` and ``%`` (URI query, fragment and escapes), names longer than
255 bytes in UTF-8 (the file-name limit of common filesystems), strings that are not valid
Unicode (lone surrogates), and names that begin or end with a space or end with a dot
(Windows drops those, so the name read back differs from the one written).
"""

from __future__ import annotations

import re

from .errors import ValidationError

_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")
_URI_SPECIAL = re.compile(r"[?#%]")
MAX_SEGMENT_BYTES = 255
RULE = (
    "use a non-empty name of at most 255 bytes (UTF-8) without '/', '\\', '?', '#', '%', "
    "control characters or lone surrogates, that neither starts nor ends with a space, "
    "does not end with a dot, and is not '.' or '..'"
)


def segment_problem(name: object) -> str | None:
    """Why ``name`` cannot be a folder or file name in every store, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "'.' and '..' name folders that already exist"
    match = _BAD.search(name)
    if match:
        return f"it contains {match.group()!r}"
    match = _URI_SPECIAL.search(name)
    if match:
        return f"it contains {match.group()!r}, which object-store URIs treat specially"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it contains a lone surrogate (not valid Unicode), which no store can hold"
    if size > MAX_SEGMENT_BYTES:
        return f"it is {size} bytes long in UTF-8, over the limit of {MAX_SEGMENT_BYTES}"
    if name.strip(" ") != name or name.strip() != name:
        return "it starts or ends with a space"
    if name.endswith("."):
        return "it ends with a dot (Windows drops a trailing dot)"
    return None


def check_segment(name: str, what: str) -> str:
    """Return ``name`` if it is a safe single path segment, else raise naming ``what`` and the rule."""
    problem = segment_problem(name)
    if problem is not None:
        raise ValidationError(f"{what} {_shown(name)} cannot be used as a folder or file name ({problem}): {RULE}")
    return name


def check_relative(name: str, what: str) -> str:
    """Return ``name`` if it is a relative path of safe segments (``a/b.txt``), else raise."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} {_shown(name)} must be a non-empty relative path")
    for part in name.split("/"):
        check_segment(part, what)
    return name


def _shown(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 80 else text[:60] + "..." + text[-12:]
