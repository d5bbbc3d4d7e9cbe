"""Steps and datasources used by the Ray tests (importable on workers: tests/ is on their path)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from crystallize import data_source, pipeline_step


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def record(data, ctx, *, delta: float = 0.0):
    return data, {"value": data + delta + ctx["replicate"]}


@pipeline_step()
def flaky_once(data, ctx, *, marker_dir: str = "", error: str = "ConnectionError"):
    """Raises ``error`` the first time each (condition, replicate) runs, then succeeds."""
    marker = Path(marker_dir) / f"{ctx['condition']}-{ctx['replicate']}"
    if not marker.exists():
        marker.write_text("failed once")
        raise {"ConnectionError": ConnectionError, "ValueError": ValueError}[error](
            f"transient failure of replicate {ctx['replicate']}"
        )
    return data, {"ok": 1}


@pipeline_step()
def crash_worker(data, ctx, *, marker_dir: str = "", replicate_to_crash: int = 3, always: bool = False):
    """Kills its worker process (like a segfault) for one replicate: once, or every time."""
    if ctx["replicate"] == replicate_to_crash:
        marker = Path(marker_dir) / f"crashed-{ctx['condition']}-{ctx['replicate']}"
        if always or not marker.exists():
            marker.write_text("crashed")
            os._exit(1)
    return data, {"survived": 1}


@pipeline_step()
def hold_lock(data, ctx, *, lock: object = None):
    return data


LOCK = threading.Lock()


@pipeline_step()
def slow(data, ctx, *, seconds: float = 0.05):
    time.sleep(seconds)
    return data, {"pid": os.getpid(), "start": time.time()}


@pipeline_step(cacheable=True)
def expensive(data, ctx, *, log: str = ""):
    """The same input in every replicate: one computation should serve them all."""
    with open(log, "a") as handle:  # the pid, not ctx["replicate"]: reading that would key the entry per replicate
        handle.write(f"{os.getpid()}\n")
    time.sleep(0.3)
    return data + 1, {"expensive": 1}


@pipeline_step()
def read_env(data, ctx, *, name: str = ""):
    return data, {"env": os.environ.get(name, "<unset>")}
