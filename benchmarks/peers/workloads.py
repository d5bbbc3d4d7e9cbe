"""The work every runner does, as plain functions, so ours and each peer time the same thing.

Standard library only (NumPy is imported where a kernel needs it): every peer's virtual
environment can import this module. ``compare_executors.py`` calibrates the loop count on the
driver and passes it to every runner, so all of them burn the same number of iterations.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

# Workload names, in the order the tables show them.
WORKLOADS = ("noop", "cpu", "numpy", "sleep", "cached", "optimize")

SLEEP_SECONDS = 0.02
EXPENSIVE_MULTIPLE = 10  # the cacheable step costs this many 20 ms burns
OPTIMIZE_TRIALS = 20
OPTIMIZE_REPLICATES = 10
ROOT_SEED = 1


def burn(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` multiply-adds (about 20 ms at the calibrated count)."""
    total = 0
    for i in range(loops):
        total += i * i
    return total % 7


def calibrate_burn(seconds: float = 0.02, repeats: int = 5) -> int:
    """Loop count for ``seconds`` of :func:`burn` on this machine (median rate of ``repeats`` timings)."""
    loops = 500_000
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        burn(loops)
        rates.append(loops / (time.perf_counter() - started))
    return max(1, int(statistics.median(rates) * seconds))


def sleep_io() -> None:
    """Stands in for I/O: the replicate waits without using the CPU."""
    time.sleep(SLEEP_SECONDS)


def make_array(mib: int) -> Any:
    """A float64 array of ``mib`` MiB, made on the driver (the datasource carries it to workers)."""
    import numpy as np

    return np.arange(mib * 1024 * 1024 // 8, dtype=np.float64) / 1e6


def numpy_kernel(array: Any) -> float:
    """One pass over the whole array (a dot product: no temporary copies)."""
    import numpy as np

    return float(np.dot(array, array))


def seed_globals(seed: int) -> None:
    """Seed ``random`` (and NumPy's global generator when present), as a seed plugin does."""
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed % (2**32))


def replicate_seed(replicate: int) -> int:
    """A replicate's seed from the root seed and its index (independent of worker and order)."""
    try:
        import numpy as np
    except ImportError:
        return (ROOT_SEED * 1_000_003 + replicate) % (2**32)
    return int(np.random.SeedSequence([ROOT_SEED, replicate]).generate_state(1)[0])


def trial_deltas(trials: int, seed: int = 7) -> list[float]:
    """The candidates every optimizer runner tries, in order (a random search with a fixed seed)."""
    rng = random.Random(seed)
    return [rng.uniform(-1.0, 1.0) for _ in range(trials)]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def timed_runs(run: Callable[[int], Any], repeats: int) -> list[float]:
    """Wall seconds of ``run(repeat_index)``, ``repeats`` times."""
    times = []
    for index in range(repeats):
        started = time.perf_counter()
        run(index)
        times.append(time.perf_counter() - started)
    return times


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measurement(
    workload: str, runner: str, executor: str, units: int, times: list[float], **extra: Any
) -> dict[str, Any]:
    """One row of results: medians over repeats, with every run kept."""
    return {
        "workload": workload,
        "runner": runner,
        "executor": executor,
        "units": units,
        "seconds": median(times),
        "runs": [round(t, 6) for t in times],
        **extra,
    }


# Distributions to ask when a module has no ``__version__`` (upstream crystallize-ml 0.27).
_DISTRIBUTIONS = {"crystallize": "crystallize-ml"}


def versions(*modules: str) -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in modules:
        try:
            module = __import__(name)
        except ImportError:
            continue
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = metadata.version(_DISTRIBUTIONS.get(name, name))
            except metadata.PackageNotFoundError:
                version = "?"
        found[name] = str(version)
    return found


def read_spec() -> dict[str, Any]:
    """The runner's instructions: a JSON object in ``argv[1]``."""
    return json.loads(sys.argv[1])


def emit(payload: dict[str, Any]) -> None:
    """The one line the driver parses (everything else a runner prints is ignored)."""
    sys.stdout.write("RESULT " + json.dumps(payload) + "\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def chdir_fresh(base: str, name: str) -> str:
    """A new empty working folder under ``base`` (stores and caches land there); returns it."""
    folder = os.path.join(base, name)
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)
    return folder
