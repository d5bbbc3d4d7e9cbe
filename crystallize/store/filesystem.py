"""``Store``: bytes in and out of one root (a local folder or an object-store URI) over ``pyarrow.fs``.

Writes are atomic everywhere: the bytes go to a temporary name beside the target and
are then moved into place. A local move is a rename; on object stores it is a
server-side copy, so the final key appears whole or not at all. A failed or
interrupted write publishes nothing.
"""

from __future__ import annotations

import os
import posixpath
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ..errors import ValidationError
from ..paths import check_relative

# Flat key spaces: "creating" a parent there means one marker object per level, a request each.
_OBJECT_STORES = tuple(getattr(pafs, name) for name in ("S3FileSystem", "GcsFileSystem") if hasattr(pafs, name))


def _is_uri(location: str) -> bool:
    parsed = urlparse(location)
    return len(parsed.scheme) > 1 and parsed.scheme != "file"


def _filesystem_for(location: str) -> tuple[pafs.FileSystem, str]:
    if not _is_uri(location):
        path = location[len("file://") :] if location.startswith("file://") else location
        return pafs.LocalFileSystem(), os.path.abspath(path).replace(os.sep, "/")
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        return _s3_filesystem(location)
    filesystem, path = pafs.FileSystem.from_uri(location)
    return filesystem, path.rstrip("/")


def _s3_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """S3 with single-request uploads for small objects (``allow_delayed_open``)."""
    from urllib.parse import parse_qs

    parsed = urlparse(location)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    options: dict[str, Any] = {"allow_delayed_open": True}
    for key in ("region", "scheme", "endpoint_override", "access_key", "secret_key", "session_token"):
        if key in query:
            options[key] = query[key]
    if query.get("allow_bucket_creation", "").lower() in ("1", "true", "yes"):
        options["allow_bucket_creation"] = True
    endpoint = os.environ.get("CRYSTALLIZE_S3_ENDPOINT")
    if endpoint and "endpoint_override" not in options:
        scheme, _, host = endpoint.rpartition("://")
        options["endpoint_override"] = host or endpoint
        if scheme:
            options["scheme"] = scheme
    filesystem = pafs.S3FileSystem(**options)
    return filesystem, f"{parsed.netloc}{parsed.path}".rstrip("/")


class Store:
    """A root and the operations the engine needs on it; picklable (it travels as its URI)."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = os.fspath(location)
        self._fs: pafs.FileSystem | None = None
        self._base: str | None = None

    # -- plumbing -----------------------------------------------------------------
    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs, self._base = _filesystem_for(self.location)
        return self._fs

    @property
    def base(self) -> str:
        if self._base is None:
            self._fs, self._base = _filesystem_for(self.location)
        return self._base

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.location == self.location

    def __hash__(self) -> int:
        return hash(self.location)

    def full_path(self, relative: str) -> str:
        """The absolute filesystem path of ``relative``, which must stay inside the root."""
        check_relative(relative, "store path")
        joined = posixpath.normpath(posixpath.join(self.base, relative))
        if not (joined == self.base or joined.startswith(self.base.rstrip("/") + "/")):
            raise ValidationError(f"{relative!r} resolves outside the store root {self.location}")
        return joined

    def _listing_path(self, relative: str) -> str:
        return self.base if relative in ("", ".") else self.full_path(relative)

    def uri(self, relative: str) -> str:
        """A location a person can paste: a local path, or the URI of the object."""
        path = self.full_path(relative)
        if self.is_local:
            return path
        scheme = urlparse(self.location).scheme
        return f"{scheme}://{path}"

    # -- reads ----------------------------------------------------------------------
    def read_bytes(self, relative: str) -> bytes:
        path = self.full_path(relative)
        try:
            if self.is_local:  # a seekable file: one allocation instead of chunks joined
                with self.fs.open_input_file(path) as handle:
                    return handle.read()
            with self.fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not self.exists(relative):
                raise FileNotFoundError(path) from exc
            raise

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.full_path(relative)).type != pafs.FileType.NotFound

    def is_dir(self, relative: str) -> bool:
        return self.fs.get_file_info(self.full_path(relative)).type == pafs.FileType.Directory

    def list_dir(self, relative: str) -> list[str]:
        """Names directly under ``relative`` (``""`` is the root; empty when it does not exist)."""
        path = self._listing_path(relative)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(posixpath.basename(info.path.rstrip("/")) for info in infos)

    def walk_files(self, relative: str) -> Iterator[str]:
        """Relative paths of every file below ``relative`` (``""`` is the root)."""
        path = self._listing_path(relative)
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        prefix = self.base.rstrip("/") + "/"
        for info in infos:
            if info.type == pafs.FileType.File:
                yield info.path[len(prefix) :] if info.path.startswith(prefix) else info.path

    # -- writes -----------------------------------------------------------------------
    def write_bytes(self, relative: str, data: bytes | bytearray | memoryview | list[Any]) -> str:
        """Publish ``data`` (bytes, or a list of buffers written in order) at ``relative`` atomically."""
        path = self.full_path(relative)
        parent = posixpath.dirname(path)
        if not isinstance(self.fs, _OBJECT_STORES):  # object stores have no folders to make
            self.fs.create_dir(parent, recursive=True)
        temporary = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with self.fs.open_output_stream(temporary) as stream:
                for part in data if isinstance(data, list) else (data,):
                    stream.write(part)
            self.fs.move(temporary, path)
        except BaseException:
            try:
                self.fs.delete_file(temporary)
            except (FileNotFoundError, OSError):
                pass
            raise
        return path

    def delete(self, relative: str) -> None:
        path = self.full_path(relative)
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(path)

    def claim(self, relative: str) -> bool:
        """Create the folder ``relative`` if nobody has; True for exactly one concurrent caller.

        Local folders use ``mkdir`` (atomic). Object stores have no atomic create, so
        a claimant writes a marker, lists the markers, and wins only if its marker is
        the only one (strong list-after-write consistency, as S3 and GCS give): two
        claimants can both lose, never both win.
        """
        path = self.full_path(relative)
        if self.is_local:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            try:
                os.mkdir(path)
                return True
            except FileExistsError:
                return False
        claims = f"{relative}/.claims"
        if self.exists(relative) and [n for n in self.list_dir(relative) if n != ".claims"]:
            return False
        marker = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        self.write_bytes(f"{claims}/{marker}", b"")
        # Winning still needs a listing with no other marker (that is what makes it safe);
        # the oldest claimant waits for the newer ones to withdraw instead of withdrawing
        # too, so a contested version is still taken by someone rather than skipped.
        for attempt in range(20):  # the oldest gives up after ~1.5 s (a claimant that died mid-claim)
            others = [name for name in self.list_dir(claims) if name != marker and not name.startswith(".")]
            if not others:
                return True
            if min(others) < marker or attempt == 19:
                self.delete(f"{claims}/{marker}")
                time.sleep(random.uniform(0.0, 0.05))
                return False
            time.sleep(min(0.01 * (attempt + 1), 0.1))
        return False
