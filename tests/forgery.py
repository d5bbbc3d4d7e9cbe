"""A value whose unpickling runs code: tests prove stores never unpickle what they must not."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Booby:
    """Unpickling this runs code: it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_spring, (self.path,))


def _spring(path: str) -> int:
    Path(path).write_text("unpickled")
    return -1
