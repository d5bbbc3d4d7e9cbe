"""``Store``: bytes in and out of one root (a local folder or an object-store URI) over ``pyarrow.fs``.

Writes are atomic everywhere: the bytes go to a temporary name beside the target and
are then moved into place. A local move is a rename; on object stores it is a
server-side copy, so the final key appears whole or not at all. A failed or
interrupted write publishes nothing. Locally the temporary file is fsynced before
the rename and its folder after it, so a published file survives the machine dying.
Temporary files a killed writer left behind (``.<name>.<hex>.tmp``) are removed by
:meth:`Store.remove_stale_temporaries` once they are older than a grace period.

On S3, pyarrow sends a temporary above one part (10 MiB in pyarrow 26, fixed: it re-cuts
whatever it is given into parts of that size) as a multipart upload, each part going up in
the background while the next is written, and smaller ones in a single request. The
temporary stays even though a multipart upload is itself all-or-nothing: pyarrow's Python
API cannot abort an upload, and closing the stream, explicitly, on leaving ``with`` or when
it is garbage-collected, completes it with whatever was written, so an upload straight to
the final key that an error or an interrupt cut short would publish the truncated object
there. Two costs remain: the move is a server-side copy, which S3 limits to 5 GiB per
request, and a part the server refuses leaves an incomplete multipart upload of the
temporary (no object, but its parts are billed) that only a lifecycle rule
(``AbortIncompleteMultipartUpload``) removes.

A local store never follows a symbolic link out of its root: every path is resolved
(``os.path.realpath``) and one that lands outside is refused with
:class:`~crystallize.errors.StorePathError`; listings skip such links. Object stores
have no links, so only the ``..`` check applies there.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import stat
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import StorePathError
from ..paths import check_relative

TEMP_GRACE_ENV = "CRYSTALLIZE_TEMP_GRACE_SECONDS"
DEFAULT_TEMP_GRACE_SECONDS = 3600.0


def temp_grace_seconds() -> float:
    """How old a temporary file must be before it counts as abandoned (``$CRYSTALLIZE_TEMP_GRACE_SECONDS``)."""
    try:
        return max(0.0, float(os.environ.get(TEMP_GRACE_ENV, DEFAULT_TEMP_GRACE_SECONDS)))
    except ValueError:
        return DEFAULT_TEMP_GRACE_SECONDS


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :meth:`Store.write_bytes`' temporaries."""
    return name.startswith(".") and name.endswith(".tmp")


def _fsync_dir(path: str) -> None:
    if os.name != "posix":  # folders cannot be opened (nor need syncing) elsewhere
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


logger = logging.getLogger(__name__)

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
        self._real_base: str | None = None

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
        """The absolute filesystem path of ``relative``, which must stay inside the root (links resolved, locally)."""
        check_relative(relative, "store path")
        joined = posixpath.normpath(posixpath.join(self.base, relative))
        if not (joined == self.base or joined.startswith(self.base.rstrip("/") + "/")):
            raise StorePathError(f"{relative!r} resolves outside the store root {self.location}")
        if self.is_local:
            resolved = os.path.realpath(joined)
            if not self._resolves_inside(resolved):
                raise StorePathError(
                    f"{joined} resolves to {resolved}, outside the store root {self.real_base}: a symbolic link "
                    "leads out of the store, and stores never follow links out of their root. Replace the link "
                    "with a real folder, or point the store itself at the place the link leads to."
                )
        return joined

    @property
    def real_base(self) -> str:
        """The root with symbolic links resolved (local stores; the root itself may be a link)."""
        if self._real_base is None:
            self._real_base = os.path.realpath(self.base)
        return self._real_base

    def _resolves_inside(self, resolved: str) -> bool:
        root = self.real_base
        return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)

    def _local_entries(self, path: str, recursive: bool) -> Iterator[tuple[str, os.stat_result]]:
        """(path, stat) of the files under ``path``; links that lead out of the root are skipped, loops cut."""
        # Loops (only links make them) are cut by the folders' (device, inode), which the walk
        # already has from stat(): resolving every folder's path would cost a call per component.
        try:
            top = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        seen: set[tuple[int, int]] = set()
        pending = [(path, (top.st_dev, top.st_ino))]
        while pending:
            folder, identity = pending.pop()
            if identity in seen:
                continue
            seen.add(identity)
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                child = f"{folder.rstrip('/')}/{entry.name}"
                if entry.is_symlink() and not self._resolves_inside(os.path.realpath(child)):
                    continue
                try:
                    info = entry.stat()
                except FileNotFoundError:  # removed meanwhile, or a dangling link
                    continue
                if stat.S_ISDIR(info.st_mode):
                    if recursive:
                        pending.append((child, (info.st_dev, info.st_ino)))
                elif stat.S_ISREG(info.st_mode):
                    yield child, info

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
            # a random-access file knows its size: one allocation and, on S3, one GET for the
            # whole object (a stream reads S3 in 256 KiB requests: 1024 for 256 MiB)
            with self.fs.open_input_file(path) as handle:
                return handle.read()
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
        if self.is_local:
            try:
                entries = list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(
                entry.name
                for entry in entries
                if not entry.is_symlink() or self._resolves_inside(os.path.realpath(entry.path))
            )
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(posixpath.basename(info.path.rstrip("/")) for info in infos)

    def walk_sizes(self, relative: str) -> Iterator[tuple[str, int]]:
        """(relative path, size in bytes) of every file below ``relative``."""
        path = self._listing_path(relative)
        prefix = self.base.rstrip("/") + "/"
        if self.is_local:
            for child, info in self._local_entries(path, recursive=True):
                yield (child[len(prefix) :] if child.startswith(prefix) else child), info.st_size
            return
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type == pafs.FileType.File:
                yield (info.path[len(prefix) :] if info.path.startswith(prefix) else info.path), int(info.size or 0)

    def walk_files(self, relative: str) -> Iterator[str]:
        """Relative paths of every file below ``relative`` (``""`` is the root)."""
        path = self._listing_path(relative)
        prefix = self.base.rstrip("/") + "/"
        if self.is_local:
            for child, _ in self._local_entries(path, recursive=True):
                yield child[len(prefix) :] if child.startswith(prefix) else child
            return
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type == pafs.FileType.File:
                yield info.path[len(prefix) :] if info.path.startswith(prefix) else info.path

    # -- writes -----------------------------------------------------------------------
    def write_bytes(
        self, relative: str, data: bytes | bytearray | memoryview | list[Any], *, durable: bool = True
    ) -> str:
        """Publish ``data`` (bytes, or a list of buffers written in order) at ``relative`` atomically.

        ``durable=False`` skips the fsyncs of a local store: for files rewritten every few
        seconds whose loss with the machine costs nothing (leases, holder files).
        """
        path = self.full_path(relative)
        parent = posixpath.dirname(path)
        temporary = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        if self.is_local:
            self._write_local(path, parent, temporary, data, durable)
            return path
        # Every piece becomes an Arrow buffer (no copy) before a request goes out: a piece that
        # is not bytes-like fails here, not after the pieces before it were uploaded for nothing.
        pieces = data if isinstance(data, list) else (data,)
        buffers = [part if isinstance(part, pa.Buffer) else pa.py_buffer(part) for part in pieces]
        if not isinstance(self.fs, _OBJECT_STORES):  # object stores have no folders to make
            self.fs.create_dir(parent, recursive=True)
        try:
            with self.fs.open_output_stream(temporary) as stream:
                for buffer in buffers:
                    stream.write(buffer)
            self.fs.move(temporary, path)
        except BaseException:
            try:
                self.fs.delete_file(temporary)
            except (FileNotFoundError, OSError):
                pass
            raise
        return path

    def _write_local(
        self, path: str, parent: str, temporary: str, data: bytes | bytearray | memoryview | list[Any], durable: bool
    ) -> None:
        """Temporary file, fsync, rename, fsync of the folder: one fsync per file and one per folder."""
        os.makedirs(parent, exist_ok=True)
        try:
            with open(temporary, "xb") as handle:
                for part in data if isinstance(data, list) else (data,):
                    handle.write(part)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        if durable:
            _fsync_dir(parent)

    def remove_stale_temporaries(
        self, relative: str, *, recursive: bool = True, grace_seconds: float | None = None
    ) -> list[str]:
        """Delete write temporaries under ``relative`` older than the grace period; returns what went.

        A writer that is still busy has a fresh temporary (its age is the time since its last
        byte), so only files a killed or failed writer left behind are removed.
        """
        grace = temp_grace_seconds() if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace
        path = self._listing_path(relative)  # a path leading out of the root raises here, as everywhere
        stale: list[str] = []
        try:
            if self.is_local:
                for child, info in self._local_entries(path, recursive=recursive):
                    if is_temporary(posixpath.basename(child)) and info.st_mtime < cutoff:
                        stale.append(child)
            else:
                selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
                for item in self.fs.get_file_info(selector):
                    mtime = item.mtime.timestamp() if item.mtime is not None else None
                    name = posixpath.basename(item.path.rstrip("/"))
                    if item.type == pafs.FileType.File and is_temporary(name) and mtime is not None and mtime < cutoff:
                        stale.append(item.path)
        except OSError as exc:  # tidying up is best effort: a listing that fails leaves the leftovers for later
            logger.debug("Could not list %s for stale temporary files: %s", path, exc)
            return []
        removed = []
        for item_path in stale:
            try:
                self.fs.delete_file(item_path)
                removed.append(item_path)
            except (FileNotFoundError, OSError):  # gone meanwhile, or not ours to delete: leave it
                pass
        return removed

    def delete(self, relative: str) -> None:
        """Remove a file or folder; one that is gone already (another process removed it first) is fine."""
        path = self.full_path(relative)
        info = self.fs.get_file_info(path)
        try:
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(path)
        except FileNotFoundError:
            pass

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
        if self.exists(relative) and [n for n in self.list_dir(relative) if n != ".claims"]:
            return False
        return self._win_by_marker(f"{relative}/.claims", b"")

    def _win_by_marker(self, folder: str, payload: bytes) -> bool:
        """Object-store exclusive create: write a marker into ``folder``, win if it is the only one.

        Winning needs a listing with no other marker (strong list-after-write consistency makes
        that safe); the oldest claimant waits for the newer ones to withdraw instead of
        withdrawing too, so a contested name is still taken by someone rather than skipped.
        """
        marker = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        self.write_bytes(f"{folder}/{marker}", payload)
        for attempt in range(20):  # the oldest gives up after ~1.5 s (a claimant that died mid-claim)
            others = [name for name in self.list_dir(folder) if name != marker and not name.startswith(".")]
            if not others:
                return True
            if min(others) < marker or attempt == 19:
                self.delete(f"{folder}/{marker}")
                time.sleep(random.uniform(0.0, 0.05))
                return False
            time.sleep(min(0.01 * (attempt + 1), 0.1))
        return False

    def create_exclusive(self, relative: str, payload: bytes) -> bool:
        """Create ``relative`` holding ``payload`` unless it exists; True for exactly one concurrent caller.

        Locally a hard link of a finished temporary file (``link`` fails when the name is
        taken), so the file is whole from the moment it exists; not fsynced: callers use it
        for coordination that is redone when lost. On object stores ``relative`` becomes a
        folder of claimants' markers, each holding its payload (read with :meth:`read_exclusive`).
        """
        path = self.full_path(relative)
        if not self.is_local:
            if self.list_dir(relative):
                return False
            return self._win_by_marker(relative, payload)
        parent = posixpath.dirname(path)
        os.makedirs(parent, exist_ok=True)
        temporary = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(temporary, "xb") as handle:
            handle.write(payload)
        try:
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)

    def read_exclusive(self, relative: str) -> list[bytes]:
        """The payload(s) at a name made by :meth:`create_exclusive`: one, none, or (object stores,
        while claimants contend or after one died mid-claim) several."""
        if self.is_local:
            try:
                return [self.read_bytes(relative)]
            except (FileNotFoundError, IsADirectoryError):
                return []
        payloads = []
        for name in self.list_dir(relative):
            if name.startswith("."):
                continue
            try:
                payloads.append(self.read_bytes(f"{relative}/{name}"))
            except FileNotFoundError:  # withdrawn since the listing
                continue
        return payloads
