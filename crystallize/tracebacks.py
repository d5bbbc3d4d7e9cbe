"""Worker tracebacks that name the user's files again.

cloudpickle (3.1+) sets ``co_filename`` to ``"<dynamic-code>"`` on every function it ships by
value, keeping the line numbers. A traceback raised on a worker then reads
``File "<dynamic-code>", line 12, in add_noise``: right line, no file, no source text. The driver
still holds the original code objects, so it records where they live with ``code_origins`` (a
small, picklable dict shipped with the work) and the worker formats with ``format_exception``.

Typical use::

    origins = code_origins([step.fn for step in pipeline.steps])  # driver
    ...
    except Exception as exc:                                      # worker
        text = format_exception(exc, origins)
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from .hashing import reachable_code

__all__ = ["DYNAMIC_CODE_FILENAME", "add_note", "code_origins", "format_exception"]

DYNAMIC_CODE_FILENAME = "<dynamic-code>"
"""The ``co_filename`` cloudpickle gives code it pickles by value."""

CodeKey = tuple[str, int]


def code_origins(functions: Iterable[Any]) -> dict[tuple[str, int], str]:
    """Map ``(co_name, co_firstlineno)`` to the real ``co_filename`` of the code ``functions`` reach.

    Call it on the driver, where the functions still carry their files. It covers each function,
    its nested code (inner functions, lambdas, comprehensions) and the user functions and classes
    it reaches through globals, closures and defaults (the walk behind ``code_fingerprint``).
    Callables may be functions, methods, classes or callable instances. A key that two different
    files share is dropped: showing ``<dynamic-code>`` beats naming the wrong file.
    """
    origins: dict[CodeKey, str] = {}
    ambiguous: set[CodeKey] = set()
    for code in reachable_code(functions):
        filename = code.co_filename
        if filename == DYNAMIC_CODE_FILENAME:
            continue  # already shipped by value: nothing to learn from it
        key = (code.co_name, code.co_firstlineno)
        if origins.setdefault(key, filename) != filename:
            ambiguous.add(key)
    for key in ambiguous:
        del origins[key]
    return origins


def format_exception(exc: BaseException, origins: Mapping[tuple[str, int], str]) -> str:
    """``traceback.format_exception`` for ``exc``, with ``<dynamic-code>`` frames named by ``origins``.

    A frame whose code has ``co_filename == "<dynamic-code>"`` and whose ``(co_name,
    co_firstlineno)`` is in ``origins`` shows that file and, when the file is readable here, its
    source line (via ``linecache``). Every other frame, and the chained exceptions
    (``__cause__``, ``__context__``, exception groups), format exactly as the stdlib does.
    """
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    if origins:
        _relocate(summary, exc, origins, set())
    return "".join(summary.format())


def _relocate(
    summary: traceback.TracebackException,
    exc: BaseException | None,
    origins: Mapping[CodeKey, str],
    visited: set[int],
) -> None:
    """Rewrite ``summary``'s frames in place, then those of the exceptions chained to it."""
    if exc is None or id(summary) in visited:
        return
    visited.add(id(summary))
    _relocate_stack(summary.stack, exc.__traceback__, origins)
    cause = getattr(summary, "__cause__", None)
    if cause is not None:
        _relocate(cause, exc.__cause__, origins, visited)
    context = getattr(summary, "__context__", None)
    if context is not None:
        _relocate(context, exc.__context__, origins, visited)
    groups = getattr(summary, "exceptions", None)  # ExceptionGroup members, Python 3.11+
    members = getattr(exc, "exceptions", None)
    if groups and isinstance(members, (list, tuple)):
        for member_summary, member in zip(groups, members, strict=False):
            if isinstance(member, BaseException):
                _relocate(member_summary, member, origins, visited)


def _relocate_stack(stack: traceback.StackSummary, tb: TracebackType | None, origins: Mapping[CodeKey, str]) -> None:
    entries = list(traceback.walk_tb(tb))
    if len(entries) != len(stack):
        # sys.tracebacklimit cut the summary: a positive limit keeps the outermost frames
        limit = getattr(sys, "tracebacklimit", None)
        entries = entries[-len(stack) :] if isinstance(limit, int) and limit < 0 else entries[: len(stack)]
    for index, (frame, _lineno) in enumerate(entries):
        code = frame.f_code
        if code.co_filename != DYNAMIC_CODE_FILENAME:
            continue
        filename = origins.get((code.co_name, code.co_firstlineno))
        summary = stack[index]
        if filename is None or summary.name != code.co_name:
            continue
        stack[index] = _moved(summary, filename)


def _moved(summary: traceback.FrameSummary, filename: str) -> traceback.FrameSummary:
    """The same frame summary in ``filename``; its line is read from there by ``linecache``."""
    positions: dict[str, Any] = {}
    for name in ("end_lineno", "colno", "end_colno"):  # Python 3.11+: caret positions
        if hasattr(summary, name):
            positions[name] = getattr(summary, name)
    return traceback.FrameSummary(
        filename, summary.lineno, summary.name, lookup_line=True, locals=summary.locals, **positions
    )


_HAS_ADD_NOTE = hasattr(BaseException, "add_note")  # Python 3.11+


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+); on 3.10, the same ``__notes__`` list, and the
    note appended to the message (after a newline, where 3.11 prints it) so tracebacks show it too.

    The message changes only for exceptions whose text is their one string argument; others (a
    ``KeyError`` quotes its argument, an ``OSError`` formats several) keep the note in ``__notes__``.
    """
    if sys.version_info >= (3, 11) and _HAS_ADD_NOTE:
        exc.add_note(note)
        return
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        setattr(exc, "__notes__", notes)  # noqa: B010 - not a known attribute of BaseException on 3.10
    notes.append(note)
    if type(exc).__str__ is BaseException.__str__ and len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]}\n{note}",)
