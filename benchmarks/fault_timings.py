"""How fast a Ray run stops on Ctrl-C, and how fast its processes are gone, on this machine.

Each repeat starts a user script in its own process (it starts its own private local Ray,
as a user's script would), lets it record a few outcome parts, sends SIGINT and measures:

* cancel: SIGINT sent -> ``KeyboardInterrupt`` reaches the user's code (the goal is < 2 s);
* gone: SIGINT sent -> no process the script started is alive (the issue allows 10 s after
  the run ended).

Run on a quiet machine (Ray workers run at nice 15):

    python benchmarks/fault_timings.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

SCRIPT = textwrap.dedent(
    """
    import time
    from crystallize import Experiment, Pipeline, SeedPlugin, data_source, pipeline_step
    from crystallize_ray import RayExecution

    @data_source
    def zero(ctx):
        return 0

    @pipeline_step
    def slow(data, ctx):
        time.sleep(0.3)
        return data, {"value": 1.0}

    experiment = Experiment(
        datasource=zero(),
        pipeline=Pipeline([slow()]),
        plugins=[SeedPlugin(seed=3), RayExecution(progress=False, batch_size=1)],
        replicates=200,
        name="interrupted",
    )
    try:
        experiment.run()
    except KeyboardInterrupt:
        print("INTERRUPTED", time.time(), flush=True)
    """
)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            continue
    return left


def measure_once(folder: Path) -> tuple[float, float]:
    script = folder / "interrupted.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        parts = folder / "data" / "interrupted" / "v0" / "outcomes"
        deadline = time.monotonic() + 120
        while len(list(parts.glob("part-*"))) < 3:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the run never got going")
            time.sleep(0.1)
        ours = psutil.Process(proc.pid).children(recursive=True)
        sent, sent_clock = time.time(), time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        while _alive(ours) and time.monotonic() - sent_clock < 60:
            time.sleep(0.05)
        gone = time.monotonic() - sent_clock
        if _alive(ours):
            raise RuntimeError(f"processes left after 60 s: {[p.pid for p in _alive(ours)]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stamp = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("INTERRUPTED"))
    return stamp - sent, gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cancels, gones = [], []
    for index in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="crystallize-fault-") as folder:
            cancel, gone = measure_once(Path(folder))
        cancels.append(cancel)
        gones.append(gone)
        print(f"repeat {index + 1}: cancel {cancel:.2f} s, all processes gone {gone:.2f} s", flush=True)
    print(
        f"Ctrl-C under Ray, median of {args.repeats}: cancel {statistics.median(cancels):.2f} s "
        f"(max {max(cancels):.2f}), all processes gone {statistics.median(gones):.2f} s (max {max(gones):.2f})"
    )
    print(f"reproduce: python benchmarks/fault_timings.py --repeats {args.repeats}")


if __name__ == "__main__":
    main()
