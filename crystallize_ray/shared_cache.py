"""In-run sharing of cacheable step results through Ray's object store.

When many replicates feed a cacheable step the same input, the first one to ask
computes it; the others wait for it and take the result from the object store
(a broker actor hands out the reference). The result is also persisted to the
cache store, when there is one, for later runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

WAIT_SECONDS = 600.0


class CacheBroker:
    """Async actor: who computes each key, and where its result lives once computed."""

    def __init__(self) -> None:
        self.ready: dict[str, list[Any]] = {}
        self.computing: dict[str, asyncio.Event] = {}

    async def claim(self, key: str) -> tuple[str, list[Any] | None]:
        """``("ready", [ref])`` when computed, else ``("compute", None)`` for exactly one caller at a time."""
        if key in self.ready:
            return "ready", self.ready[key]
        event = self.computing.get(key)
        if event is None:
            self.computing[key] = asyncio.Event()
            return "compute", None
        try:
            await asyncio.wait_for(event.wait(), WAIT_SECONDS)
        except asyncio.TimeoutError:
            return "compute", None
        if key in self.ready:
            return "ready", self.ready[key]
        return await self.claim(key)

    def publish(self, key: str, box: list[Any]) -> None:
        self.ready[key] = box
        event = self.computing.pop(key, None)
        if event is not None:
            event.set()

    def abandon(self, key: str) -> None:
        event = self.computing.pop(key, None)
        if event is not None:
            event.set()

    def stats(self) -> dict[str, int]:
        return {"shared_results": len(self.ready)}


def start_broker() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_concurrency=1000)(CacheBroker).remote()


class SharedStepCache:
    """Worker-side cache: the persistent store first, then the run's broker."""

    def __init__(self, persistent: Any, broker: Any) -> None:
        self.persistent = persistent
        self.broker = broker

    def load(self, step: Any, key: str) -> Any:
        import ray

        if self.persistent is not None:
            entry = self.persistent.load(step, key)
            if entry is not None:
                return entry
        state, box = ray.get(self.broker.claim.remote(f"{step.fingerprint}/{key}"))
        if state == "ready" and box:
            try:
                return ray.get(box[0])
            except Exception as exc:  # noqa: BLE001 - a lost object: compute it here instead
                logger.warning("Shared result of step '%s' was lost (%s); recomputing", step.name, exc)
        return None

    def save(self, step: Any, key: str, entry: Any) -> None:
        import ray

        self.broker.publish.remote(f"{step.fingerprint}/{key}", [ray.put(entry)])
        if self.persistent is not None:
            self.persistent.save(step, key, entry)

    def abandon(self, step: Any, key: str) -> None:
        self.broker.abandon.remote(f"{step.fingerprint}/{key}")
