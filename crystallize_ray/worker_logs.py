"""What a batch logs and prints in a Ray worker travels back with its outcomes and is replayed on the driver.

Why: Ray forwards a worker's stdout and stderr through its log monitor. The lines arrive
prefixed with ``(run_batch pid=...)``, without their level and logger name as records, merged by
Ray's de-duplication (``[repeated 5x across cluster]``) and asynchronously, often after the run's
final table. Instead, while a batch runs, the worker keeps the ``logging`` records at or above the
driver's level (so DEBUG noise is not shipped when the driver would drop it) and what Python code
prints, in order, and returns them with the batch's outcomes. The driver replays them as it
collects the batch, through its own loggers (their levels, handlers and formats) and streams, as if
the code had run there: nothing of a batch can arrive after the outcomes it came with.

Not covered: output written below Python (a C extension writing to file descriptor 1 or 2) and
output between batches; Ray still forwards those (without de-duplication for a private Ray).
A replicate that runs for minutes shows its lines when its batch ends, not while it runs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from crystallize.engine.plan import ReplicateOutcome

logger = logging.getLogger(__name__)

QUIET_ENV = "CRYSTALLIZE_QUIET"  # set by ``crystallize run --quiet``: back-ends keep their own notices to themselves
MAX_ENTRIES = 10_000  # per batch: a runaway loop of log lines must not fill the driver's memory
MAX_CHARS = 4 << 20  # per batch, printed text and formatted messages together
_RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"  # ray.experimental.tqdm_ray's lines: Ray's own forwarding draws them
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "_ray_timestamp_ns"}
_SIMPLE = (str, int, float, bool, type(None))


def quiet() -> bool:
    """Whether the user asked for warnings only (``crystallize run --quiet``)."""
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def _is_ray(name: str) -> bool:
    return name == "ray" or name.startswith("ray.")


def driver_level() -> int:
    """The lowest level any logger on the driver lets through: records below it are never shipped.

    The driver still filters each replayed record by its own logger's level, as for local code.
    """
    levels = [logging.getLogger().getEffectiveLevel()]
    for name, item in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(item, logging.Logger) and item.level and not item.disabled and not _is_ray(name):
            levels.append(item.level)
    return max(min(levels), logging.root.manager.disable + 1)


# ---------------------------------------------------------------- worker side


class Batch(list):  # type: ignore[type-arg]  # list[ReplicateOutcome]; pickles as a list plus its attributes
    """A batch's outcomes (the list itself) and what its code logged and printed, in order.

    ``entries`` holds ``("log", fields of a LogRecord)``, ``("out", text)`` or ``("err", text)``.
    A subclass of list, so a caller that does not replay it still gets the outcomes.
    """

    entries: list[tuple[str, Any]]
    dropped: int


class _Capture(logging.Handler):
    """Collects records and printed text of one batch, within the size limits."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.entries: list[tuple[str, Any]] = []
        self.chars = 0
        self.dropped = 0
        self.origin = f"{socket.gethostname()}:{os.getpid()}"

    def _room(self, size: int) -> bool:
        if len(self.entries) >= MAX_ENTRIES or self.chars + size > MAX_CHARS:
            self.dropped += 1
            return False
        self.chars += size
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if _is_ray(record.name) or record.name == __name__:
            return
        try:
            fields = _shippable(record, self.origin)
        except Exception:  # noqa: BLE001 - a message that cannot be formatted: logging's own report
            self.handleError(record)
            return
        if self._room(len(fields["msg"]) + len(fields.get("exc_text") or "")):
            self.entries.append(("log", fields))

    def write(self, kind: str, text: str) -> None:
        if not text or not self._room(len(text)):
            return
        if self.entries and self.entries[-1][0] == kind:  # one entry per run of writes to one stream
            self.entries[-1] = (kind, self.entries[-1][1] + text)
        else:
            self.entries.append((kind, text))


class _Stream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while a batch runs: text goes to the capture, in order with the records."""

    def __init__(self, capture: _Capture, kind: str, real: Any) -> None:
        self._capture: _Capture | None = capture
        self._kind, self._real = kind, real

    def release(self) -> None:
        """After the batch: a handler made during it (``basicConfig`` in a step) still holds this stream."""
        self._capture = None

    def write(self, text: str) -> int:
        if self._capture is None or _RAY_TQDM_MAGIC in text:
            return self._real.write(text)  # type: ignore[no-any-return]
        self._capture.write(self._kind, text)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # code that needs the descriptor writes below Python: Ray forwards that
        return self._real.fileno()  # type: ignore[no-any-return]

    @property
    def buffer(self) -> Any:  # bytes written here, likewise
        return self._real.buffer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._real, "encoding", None) or "utf-8"


def _shippable(record: logging.LogRecord, origin: str) -> dict[str, Any]:
    """A record's fields as plain values: its message formatted here, where its arguments live."""
    fields = {k: v for k, v in record.__dict__.items() if k in _STANDARD or isinstance(v, _SIMPLE)}
    fields.pop("_ray_timestamp_ns", None)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info and not record.exc_text:
        fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
    fields["exc_info"] = None
    fields["crystallize_worker"] = origin  # where it ran, for formats that want to show it
    return fields


@contextlib.contextmanager
def captured(level: int) -> Iterator[_Capture]:
    """While the block runs, records at or above ``level`` and Python-level prints are kept, not written.

    The handler on the root logger also keeps Python's last-resort handler from writing the
    records to the worker's stderr, which Ray would forward a second time.
    """
    root = logging.getLogger()
    capture = _Capture(level)
    saved_level = root.level
    warnings_were_captured = getattr(logging, "_warnings_showwarning", None) is not None
    root.addHandler(capture)
    root.setLevel(min(saved_level, level))  # never hides from the worker's own handlers what they saw before
    logging.captureWarnings(True)  # warnings as py.warnings records, shown the way the driver shows its own
    out, err = _Stream(capture, "out", sys.stdout), _Stream(capture, "err", sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield capture
    finally:
        out.release()
        err.release()
        if not warnings_were_captured:
            logging.captureWarnings(False)
        root.setLevel(saved_level)
        root.removeHandler(capture)


def run_captured(level: int | None, run: Callable[[], list[ReplicateOutcome]]) -> list[ReplicateOutcome]:
    """``run()``; with a level, its outcomes as a :class:`Batch` carrying what it logged and printed."""
    if level is None:
        return run()
    with captured(level) as capture:
        outcomes = run()
    batch = Batch(outcomes)
    batch.entries, batch.dropped = capture.entries, capture.dropped
    return batch


# ---------------------------------------------------------------- driver side


def replay(result: list[ReplicateOutcome]) -> list[ReplicateOutcome]:
    """Emit on the driver what a batch logged and printed in its worker; return its outcomes."""
    if not isinstance(result, Batch):
        return result
    streams_used = set()
    for kind, item in getattr(result, "entries", ()):
        if kind == "log":
            record = logging.makeLogRecord(item)
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):
                target.handle(record)
        else:
            stream = sys.stdout if kind == "out" else sys.stderr
            stream.write(item)
            streams_used.add(kind)
    for kind in streams_used:
        (sys.stdout if kind == "out" else sys.stderr).flush()
    dropped = getattr(result, "dropped", 0)
    if dropped:
        logger.warning(
            "A batch of %d replicate(s) logged or printed more than %d lines or %d characters; %d were dropped",
            len(result),
            MAX_ENTRIES,
            MAX_CHARS,
            dropped,
        )
    return list(result)


# ---------------------------------------------------------------- Ray's own forwarding


def quiet_ray_forwarding() -> None:
    """Drop Ray's ``(raylet)`` and ``(autoscaler)`` lines on the driver while the run is quiet.

    Ray's forwarding of worker output stays as it is; only the handler Ray installs on its
    dispatcher is wrapped. Ray internals: when they move, nothing is filtered (and nothing breaks).
    """
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        with dispatcher._lock:
            dispatcher.handlers = [
                (
                    name,
                    functools.partial(_unless_quiet, handle)
                    if name == "ray_print_logs" and not _wrapped(handle)
                    else handle,
                )
                for name, handle in dispatcher.handlers
            ]
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logger.debug("cannot filter Ray's forwarded lines: %s", exc)


def _wrapped(handle: Any) -> bool:
    return isinstance(handle, functools.partial) and handle.func is _unless_quiet


def _unless_quiet(handle: Callable[[dict[str, Any]], None], data: dict[str, Any]) -> None:
    if quiet() and data.get("pid") in ("raylet", "autoscaler"):
        return
    handle(data)


class RayWarnings(logging.Filter):
    """On ``py.warnings`` (warnings routed to logging): while quiet, drop those Ray's own code raises.

    Ray's deprecation and tip warnings name a file in its package; a warning Ray attributes to
    the caller (``stacklevel=2``) names the user's file and still shows.
    """

    def __init__(self) -> None:
        super().__init__()
        import ray

        self.prefix = os.path.dirname(os.path.abspath(ray.__file__)) + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        return not (quiet() and record.getMessage().startswith(self.prefix))


def quiet_ray_warnings() -> None:
    """Install :class:`RayWarnings` once on the driver's ``py.warnings`` logger."""
    warnings_logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, RayWarnings) for f in warnings_logger.filters):
        warnings_logger.addFilter(RayWarnings())


class RayNotices(logging.Handler):
    """The driver's ``ray`` logger once ``ray.init`` removed Ray's handler: warnings to stderr; errors only when quiet.

    Without a handler its records would reach Python's last-resort handler, which knows no quiet.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if quiet() and record.levelno < logging.ERROR:
            return
        last_resort = logging.lastResort
        if last_resort is not None:
            last_resort.handle(record)
