"""In-run sharing of cacheable step results through Ray's object store.

When many replicates feed a cacheable step the same input, the first one to ask
computes it; the others wait for it and take the result from the object store
(a broker actor hands out the reference). The result is also persisted to the
cache store, when there is one, for later runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from crystallize.cache import CacheBackend, CacheEntry, ReadSet, Resolver
    from crystallize.steps import PipelineStep

logger = logging.getLogger(__name__)

WAIT_SECONDS = 600.0


class CacheBroker:
    """Async actor: who computes each base key first, which read-sets are known, where results live.

    A step's read-set (the context keys it reads, whether it draws randomness) is only
    known once it has run, so the first replicate with a given base key computes and the
    others with that base wait for it; afterwards each resolves its own full key from the
    known read-sets and takes the result published under that key, if any.
    """

    def __init__(self) -> None:
        self.read_sets: dict[str, list[str]] = {}
        self.results: dict[str, list[Any]] = {}
        self.computing: dict[str, asyncio.Event] = {}

    async def claim(self, base: str) -> tuple[str, list[str]]:
        """``("ready", read_sets)`` once a result for ``base`` exists; else ``("compute", [])`` for one caller."""
        if base in self.read_sets:
            return "ready", self.read_sets[base]
        event = self.computing.get(base)
        if event is None:
            self.computing[base] = asyncio.Event()
            return "compute", []
        try:
            await asyncio.wait_for(event.wait(), WAIT_SECONDS)
        except asyncio.TimeoutError:
            return "compute", []
        if base in self.read_sets:
            return "ready", self.read_sets[base]
        return await self.claim(base)

    def fetch(self, key: str) -> list[Any] | None:
        return self.results.get(key)

    def publish(self, base: str, read_set: str, key: str, box: list[Any]) -> None:
        known = self.read_sets.setdefault(base, [])
        if read_set not in known:
            known.append(read_set)
        self.results[key] = box
        event = self.computing.pop(base, None)
        if event is not None:
            event.set()

    def abandon(self, base: str) -> None:
        event = self.computing.pop(base, None)
        if event is not None:
            event.set()

    def stats(self) -> dict[str, int]:
        return {"shared_results": len(self.results)}

    def forget(self, prefix: str) -> int:
        """Drop everything of one run (its keys start with ``prefix``); waiters compute for themselves."""
        dropped = 0
        for table in (self.read_sets, self.results):
            for key in [k for k in table if k.startswith(prefix)]:
                del table[key]
                dropped += 1
        for key in [k for k in self.computing if k.startswith(prefix)]:
            self.computing.pop(key).set()
        return dropped


_SHARED: ActorHandle[CacheBroker] | None = None
_SHARED_LOCK = threading.Lock()


def start_broker() -> ActorHandle[CacheBroker]:
    """This driver's broker, started once and shared by its runs (each under its own key prefix).

    Starting an actor means starting a worker process for it, a few hundred milliseconds on a
    small machine, which a short run with a cacheable step would pay every time.
    """
    global _SHARED
    import ray

    with _SHARED_LOCK:
        if _SHARED is not None:
            try:
                ray.get(_SHARED.stats.remote(), timeout=10)
                return _SHARED
            except Exception as exc:  # noqa: BLE001 - gone with its node or a previous Ray: start another
                logger.debug("The cache broker is gone (%s); starting another", exc)
        # Ray's type hints list only task options for ``ray.remote(**options)``; actors take max_concurrency too.
        _SHARED = ray.remote(num_cpus=0, max_concurrency=1000)(CacheBroker).remote()  # type: ignore[call-overload]
        return _SHARED


def release_broker(broker: ActorHandle[CacheBroker], namespace: str) -> None:
    """A run ended: its shared results leave the broker's memory (the broker stays for the next run)."""
    broker.forget.remote(f"{namespace}/")


class SharedStepCache:
    """Worker-side cache: the persistent store first, then the run's broker."""

    def __init__(self, persistent: CacheBackend | None, broker: ActorHandle[CacheBroker], namespace: str = "") -> None:
        self.persistent = persistent
        self.broker = broker
        self.namespace = namespace  # the run's: the broker serves every run of its driver

    def lookup(self, step: PipelineStep, fingerprint: str, base: str, resolve: Resolver) -> CacheEntry | None:
        import ray

        from crystallize.cache import ReadSet

        if self.persistent is not None:
            entry = self.persistent.lookup(step, fingerprint, base, resolve)
            if entry is not None:
                return entry
        state, read_sets = ray.get(self.broker.claim.remote(f"{self.namespace}/{fingerprint}/{base}"))
        if state != "ready":
            return None
        for text in read_sets:
            reads = ReadSet.from_json(text)
            key = resolve(reads)
            if key is None:
                continue
            box = ray.get(self.broker.fetch.remote(f"{self.namespace}/{fingerprint}/{key}"))
            if not box:
                continue
            try:
                return ray.get(box[0])
            except Exception as exc:  # noqa: BLE001 - a lost object: compute it here instead
                logger.warning("Shared result of step '%s' was lost (%s); recomputing", step.name, exc)
                return None
        return None

    def save(
        self, step: PipelineStep, fingerprint: str, base: str, reads: ReadSet, key: str, entry: CacheEntry
    ) -> None:
        import ray

        ns = self.namespace
        self.broker.publish.remote(
            f"{ns}/{fingerprint}/{base}", reads.to_json(), f"{ns}/{fingerprint}/{key}", [ray.put(entry)]
        )
        if self.persistent is not None:
            self.persistent.save(step, fingerprint, base, reads, key, entry)

    def abandon(self, step: PipelineStep, fingerprint: str, base: str) -> None:
        self.broker.abandon.remote(f"{self.namespace}/{fingerprint}/{base}")
