"""Advice in the reader's words: ``--resume`` at the ``crystallize`` command, ``strategy='resume'`` in Python.

A library message tells the user what to change; someone at the command line cannot pass
``strategy='resume'`` or read ``result.replicate_errors``. The command marks the time it runs
(:func:`command_line`), and messages ask :func:`hint` for the words. The mark is process-wide,
not a context variable, on purpose: a graph runs its experiments on threads of a pool, which
do not inherit context variables. This module imports nothing of ours, so any module may use it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # commands running in this process (nested calls of main() in tests)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """While this runs, messages speak to a user of the ``crystallize`` command."""
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def at_command_line() -> bool:
    """Whether the ``crystallize`` command is what called the library."""
    return _depth > 0


def hint(python: str, cli: str) -> str:
    """``cli`` when the command called the library, else ``python``."""
    return cli if at_command_line() else python


def resume_option() -> str:
    """How the user asks to resume: ``--resume`` or ``strategy='resume'``."""
    return hint("strategy='resume'", "--resume")


def all_errors_hint() -> str:
    """Where every failed replicate can be seen, with its traceback."""
    return hint(
        "result.replicate_errors holds all of them with their tracebacks (`crystallize show RUN --errors` lists them)",
        "`crystallize show RUN --errors` lists all of them with their tracebacks",
    )
