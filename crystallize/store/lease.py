"""Leases: a version being written says so, so retention never deletes a live run.

The run that claims a version writes ``lease.json`` beside its records and a daemon thread
renews it every ``renew_every`` seconds while the run goes. Another process treats the version
as live until ``expires_after`` seconds past the last renewal: a run that was killed stops
renewing and its version becomes fair game once the lease runs out. A finished run (it has
``run.json``) drops its lease.

The same thread renews the session's holder file (``holders/<id>.json``, see :mod:`.claims`),
which keeps its block claims alive; a session that ends, however it ends, removes it at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from ..errors import ValidationError
from . import layout
from .claims import holder_file, holder_record, new_holder_id
from .filesystem import Store

logger = logging.getLogger(__name__)

LEASE = "lease.json"
DEFAULT_EXPIRES_AFTER = 60.0
DEFAULT_RENEW_EVERY = 10.0


def lease_file(experiment: str, version: int) -> str:
    return f"{layout.version_dir(experiment, version)}/{LEASE}"


class Lease:
    """The lease of one version, held by this process while its run goes."""

    def __init__(
        self,
        store: Store,
        experiment: str,
        version: int,
        *,
        expires_after: float = DEFAULT_EXPIRES_AFTER,
        renew_every: float = DEFAULT_RENEW_EVERY,
        holder: str | None = None,
    ) -> None:
        if renew_every <= 0 or expires_after <= renew_every:
            raise ValidationError(f"a lease needs 0 < renew_every < expires_after, got {renew_every}, {expires_after}")
        self.store = store
        self.relative = lease_file(experiment, version)
        self.holder = holder or new_holder_id()
        self.holder_relative = holder_file(experiment, version, self.holder)
        self.expires_after = float(expires_after)
        self.renew_every = float(renew_every)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        blob = json.dumps(holder_record(self.holder, self.expires_after)).encode()
        self.store.write_bytes(self.holder_relative, blob, durable=False)  # renewed again in seconds
        self.store.write_bytes(self.relative, blob, durable=False)

    def start(self) -> None:
        self.renew()
        self._thread = threading.Thread(target=self._keep, name="crystallize-lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - a missed renewal is retried; the run goes on
                logger.warning("Could not renew the lease %s: %s", self.store.uri(self.relative), exc)

    def stop(self) -> None:
        """Stop renewing (the lease then expires on its own) and end this session's claims now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_every + 5)
            self._thread = None
        try:
            self.store.delete(self.holder_relative)
        except Exception as exc:  # noqa: BLE001 - the claims then end when the holder file expires
            logger.warning("Could not remove the holder file %s: %s", self.store.uri(self.holder_relative), exc)

    def release(self) -> None:
        """Stop renewing and remove the lease (the run finished)."""
        self.stop()
        self.store.delete(self.relative)


def is_live(store: Store, experiment: str, version: int, now: float | None = None) -> bool:
    """Whether a run still holds ``version`` (a lease renewed within its expiry)."""
    try:
        record = json.loads(store.read_bytes(lease_file(experiment, version)))
        renewed, expires = float(record["renewed_at"]), float(record["expires_after"])
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):
        return False  # a damaged lease protects nothing
    return (time.time() if now is None else now) < renewed + expires
