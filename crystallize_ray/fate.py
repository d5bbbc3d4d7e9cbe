"""When the driver that started a private local Ray dies, every process of that Ray dies with it.

Why: Ray starts its GCS, raylet, monitor, dashboard and log monitor with ``PR_SET_PDEATHSIG``,
so the kernel kills them when the driver is killed (SIGKILL, OOM killer). The processes the
raylet starts (the dashboard and runtime-env agents, workers) are not the driver's children:
they are orphaned instead, and the agents outlive the driver for a long time (issue #10, point 8).

How: right after this package starts a private Ray, the driver starts a small watchdog (this
file, run as a script with the standard library only). It is handed the driver's pid and start
time, the read end of a pipe only the driver holds, and the processes Ray started with their
descendants so far (the agents); every second it adds new descendants (workers) to the set it
watches. When the pipe reaches EOF or the driver is gone, it sends SIGTERM, then SIGKILL, to the
watched processes still alive (each checked against its start time, so a reused pid is never
hit). A worker started less than a second before the driver died may be missed: workers exit
on their own once the raylet is gone. After a normal exit Ray has already stopped all of them
and the watchdog just exits; it also exits when they are all gone while the driver runs on
(``ray.shutdown()``). Once the driver is gone, it removes the private Ray's temp folder when the
driver made it (the driver removes it itself at a normal exit). Linux only; a no-op elsewhere.

Its log goes to the Ray session's log folder, so it goes with that folder; set
``CRYSTALLIZE_RAY_FATE_LOG`` to a file path to keep it.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

SCAN_SECONDS = 1.0  # how often the watchdog looks for new descendants of the Ray processes
TERM_GRACE_SECONDS = 1.0  # between SIGTERM and SIGKILL
SIGTERM_WAIT_SECONDS = 10.0  # a watchdog sent SIGTERM still cleans up after a driver dying that soon
LOG_NAME = "crystallize_fate.log"  # in the Ray session's log folder
LOG_ENV = "CRYSTALLIZE_RAY_FATE_LOG"  # a file path for the watchdog's log instead
REMOVE_ATTEMPTS = 20  # tries to remove the temp folder while the last of Ray's processes exit

# The driver's write end of the pipe: held open for the life of the process, on purpose.
_PIPES: list[int] = []


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a process from ``/proc/<pid>/stat``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """The process ``pid`` that started at ``start`` still runs (not a zombie, not a reused pid)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in ("Z", "X")


def _descendants(parents: Iterable[int]) -> dict[int, int]:
    """``{pid: start time}`` of every living descendant of ``parents`` (one pass over ``/proc``)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _stat(int(name))
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append((int(name), stat[2]))
    found: dict[int, int] = {}
    stack = list(parents)
    while stack:
        for pid, start in children.get(stack.pop(), []):
            if pid not in found:
                found[pid] = start
                stack.append(pid)
    return found


def _signal(pid: int, start: int, signum: int) -> bool:
    """Send ``signum`` to ``pid`` only if it is still the process that started at ``start``."""
    pidfd: int | None = None
    try:
        pidfd = os.pidfd_open(pid)  # pins the process: the check below cannot race a pid reuse
    except (AttributeError, OSError):
        pass
    try:
        if not _alive(pid, start):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
        return True
    except OSError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


class _Watch:
    """The watchdog's state: the driver and the processes of its Ray, by ``(pid, start time)``."""

    def __init__(
        self, driver: int, driver_start: int, pipe: int, watched: dict[int, int], remove: str | None = None
    ) -> None:
        self.driver, self.driver_start, self.pipe = driver, driver_start, pipe
        self.watched = dict(watched)
        self.terminate_by: float | None = None
        self.remove = remove

    def refresh(self) -> None:
        """Forget the processes that ended; add the descendants of those still alive."""
        self.watched = {pid: start for pid, start in self.watched.items() if _alive(pid, start)}
        for pid, start in _descendants(self.watched).items():
            self.watched.setdefault(pid, start)

    def driver_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the pipe's EOF; True once the driver is gone."""
        try:
            readable, _, _ = select.select([self.pipe], [], [], timeout)
            if readable and os.read(self.pipe, 1) == b"":
                return True
        except InterruptedError:
            pass
        return not _alive(self.driver, self.driver_start)

    def run(self) -> None:
        """Watch; once the driver is gone, stop what is left of its Ray and remove its temp folder."""
        if self.watch():
            self.remove_folder()

    def watch(self) -> bool:
        """True when the driver is gone (its Ray stopped too), False when watching stopped while it runs."""
        gone = False
        while True:
            self.refresh()
            if gone:
                break
            if not self.watched:
                logger.info("the Ray of driver %d stopped; nothing to watch", self.driver)
                return False
            if self.terminate_by is not None and time.monotonic() > self.terminate_by:
                logger.info("asked to stop while driver %d runs; leaving its Ray alone", self.driver)
                return False
            gone = self.driver_gone(SCAN_SECONDS)
        if not self.watched:
            logger.info("driver %d exited and its Ray with it", self.driver)
            return True
        logger.warning("driver %d died; stopping what is left of its Ray: %s", self.driver, sorted(self.watched))
        self.stop()
        return True

    def remove_folder(self) -> None:
        """Remove the private Ray's temp folder, retrying while its last processes may still write there."""
        if not self.remove or not os.path.basename(self.remove).startswith("cray-") or not os.path.isdir(self.remove):
            return  # only ever the folder ensure_connected made
        logger.info("removing the temp folder %s of driver %d", self.remove, self.driver)
        for _ in range(REMOVE_ATTEMPTS):
            shutil.rmtree(self.remove, ignore_errors=True)
            if not os.path.exists(self.remove):
                return
            time.sleep(0.1)
            self.refresh()
        logger.warning("could not remove %s", self.remove)

    def stop(self) -> None:
        """SIGTERM the watched processes, then SIGKILL those still alive after a grace period."""
        for signum, wait in ((signal.SIGTERM, TERM_GRACE_SECONDS), (signal.SIGKILL, 1.0)):
            for pid, start in list(self.watched.items()):
                _signal(pid, start, signum)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.refresh()
                if not self.watched:
                    logger.info("all processes of the Ray of driver %d are gone", self.driver)
                    return
                time.sleep(0.1)
            logger.info("still alive after %s: %s", signal.Signals(signum).name, sorted(self.watched))

    def on_sigterm(self, signum: int, frame: object) -> None:
        """Stop watching, unless the driver exits soon: a SIGTERM to the whole process group reaches the
        driver too, and Ray's handler there shuts Ray down first, which takes a few seconds."""
        self.terminate_by = time.monotonic() + SIGTERM_WAIT_SECONDS


def start(
    roots: Sequence[int], log_dir: str | None = None, remove: str | None = None
) -> subprocess.Popen[bytes] | None:
    """Start the watchdog for the Ray processes ``roots`` this process started; None where unsupported.

    ``remove``: a folder the watchdog removes once the driver is gone (the private Ray's temp folder).
    """
    me = _stat(os.getpid()) if sys.platform.startswith("linux") else None
    if me is None:
        logger.debug("no fate sharing for the private Ray on %s: it needs Linux's /proc", sys.platform)
        return None
    # Our own children only (never a process of a Ray this process merely connected to), and
    # what they started so far: the agents are up once ray.init() returns, and the watchdog gets
    # them from here, in case this process dies before the watchdog's first look.
    ours = {pid: stat[2] for pid in roots if (stat := _stat(pid)) is not None and stat[1] == os.getpid()}
    if not ours:
        logger.debug("no Ray processes of ours to watch")
        return None
    ours.update(_descendants(ours))
    read_end, write_end = os.pipe()  # both non-inheritable: Ray's processes never hold the write end
    command = [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), str(me[2]), str(read_end)]
    log = os.environ.get(LOG_ENV) or (os.path.join(log_dir, LOG_NAME) if log_dir else None)
    if log:
        command += ["--log", log]
    if remove:
        command += ["--remove", remove]
    try:
        proc = subprocess.Popen(
            [*command, *(f"{pid}:{start}" for pid, start in ours.items())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(read_end,),
        )
    except OSError as exc:
        os.close(write_end)
        logger.warning("could not start the watchdog of the private Ray: %s", exc)
        return None
    finally:
        os.close(read_end)
    _PIPES.append(write_end)
    threading.Thread(target=proc.wait, name="crystallize-ray-fate-reap", daemon=True).start()
    logger.debug("watchdog %d stops Ray processes %s if this process dies", proc.pid, sorted(ours))
    return proc


def start_for_private_ray(remove: str | None = None) -> subprocess.Popen[bytes] | None:
    """Start the watchdog for the Ray this process has just started with ``ray.init()``."""
    try:
        from ray._private import worker

        node: Any = worker._global_node
        roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
        log_dir = node.get_logs_dir_path()
    except Exception as exc:  # noqa: BLE001 - Ray internals moved: run without the watchdog, say so
        logger.debug("cannot list the processes of the private Ray (%s): no watchdog", exc)
        return None
    return start(roots, log_dir, remove)


def main(argv: Sequence[str] | None = None) -> None:
    """The watchdog process: ``fate.py DRIVER_PID DRIVER_START PIPE_FD PID:START... [--log FILE] [--remove DIR]``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal kills the driver: clean up after it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("driver", type=int)
    parser.add_argument("driver_start", type=int)
    parser.add_argument("pipe", type=int)
    parser.add_argument("watched", nargs="+", help="PID:START of each process to watch")
    parser.add_argument("--log")
    parser.add_argument("--remove", help="a folder to remove once the driver is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s fate[{os.getpid()}] %(message)s",
    )
    watched: dict[int, int] = {}
    for item in args.watched:
        pid, _, start = item.partition(":")
        watched[int(pid)] = int(start)
    watch = _Watch(args.driver, args.driver_start, args.pipe, watched, args.remove)
    signal.signal(signal.SIGTERM, watch.on_sigterm)
    watch.run()


if __name__ == "__main__":
    main()
