"""Where the data and cache stores are (explicit argument, then environment, then the defaults),
and the key that signs the step cache.

The cache key is read on the driver only (:func:`cache_signing_key`) and travels to workers
inside the run spec; workers never read a key file or the environment for it. It is
``$CRYSTALLIZE_CACHE_KEY`` when set (one key shared by every machine of a cluster), otherwise
a random per-user key kept in ``$XDG_CONFIG_HOME/crystallize/cache.key`` (``~/.config/...``),
made on first use, readable by its owner only. The file holds the key as text, so
``CRYSTALLIZE_CACHE_KEY=$(cat ~/.config/crystallize/cache.key)`` elsewhere signs alike.
"""

from __future__ import annotations

import os
import secrets
import stat

from ..errors import CacheKeyError
from .filesystem import _is_uri

DATA_ENV = "CRYSTALLIZE_DATA_URI"
CACHE_ENV = "CRYSTALLIZE_CACHE_URI"
LEGACY_CACHE_ENV = "CRYSTALLIZE_CACHE_DIR"
NO_CACHE_ENV = "CRYSTALLIZE_NO_CACHE"
KEY_ENV = "CRYSTALLIZE_CACHE_KEY"
KEY_FILE_NAME = "cache.key"


def cache_disabled() -> bool:
    """``CRYSTALLIZE_NO_CACHE=1`` turns the step cache off (cacheable steps just run)."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def absolute(location: str | os.PathLike[str]) -> str:
    """A location every process resolves the same way (local paths made absolute here, on the driver)."""
    text = os.fspath(location)
    return text if _is_uri(text) else os.path.abspath(text)


def data_location(explicit: str | os.PathLike[str] | None = None) -> str:
    return absolute(explicit if explicit is not None else os.environ.get(DATA_ENV, "data"))


def cache_location(explicit: str | os.PathLike[str] | None = None) -> str:
    if explicit is not None:
        return absolute(explicit)
    return absolute(os.environ.get(CACHE_ENV) or os.environ.get(LEGACY_CACHE_ENV) or ".cache")


def cache_key_path() -> str:
    """The per-user key file: ``$XDG_CONFIG_HOME/crystallize/cache.key`` (default ``~/.config``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(os.path.abspath(config), "crystallize", KEY_FILE_NAME)


def cache_signing_key() -> bytes:
    """The key that signs cache entries: ``$CRYSTALLIZE_CACHE_KEY``, else the per-user key file (made if missing).

    Call this on the driver only; workers get the key from the run spec.
    """
    shared = os.environ.get(KEY_ENV)
    if shared:
        return shared.encode("utf-8")
    path = cache_key_path()
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    _create_key_file(path)
    return _read_key_file(path)


def _read_key_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if os.name == "posix":
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CacheKeyError(
                    f"the cache key file {path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}); "
                    f"anyone who can read it can make the cache run code as you. Fix: chmod 600 {path} "
                    "(or delete it to get a new key; cached results are then recomputed)"
                )
            if info.st_uid != os.getuid():
                raise CacheKeyError(
                    f"the cache key file {path} belongs to another user (uid {info.st_uid}); "
                    f"delete it to get a key of your own, or set {KEY_ENV}"
                )
        chunks = []
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    key = b"".join(chunks).strip()
    if len(key) < 32:
        raise CacheKeyError(f"the cache key file {path} is empty or too short; delete it to get a new key")
    return key


def _create_key_file(path: str) -> None:
    """Write a fresh key atomically with mode 0600; a concurrent creator's key wins if it got there first."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        temporary = os.path.join(folder, f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise CacheKeyError(f"cannot create the cache key file {path} ({exc}); set {KEY_ENV} instead") from exc
    try:
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # atomic, and never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: a rename is atomic too (last writer wins)
            if not os.path.exists(path):
                os.replace(temporary, path)
    except OSError as exc:
        raise CacheKeyError(f"cannot create the cache key file {path} ({exc}); set {KEY_ENV} instead") from exc
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass
