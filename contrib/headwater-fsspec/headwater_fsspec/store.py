"""The result store on an fsspec file system: ``FsspecResultStore``.

It keeps results as the local store does (``headwater.plugins.local_results``): one
object per result, named by a SHA-256 of the result's key (no key can name a path
outside the storage root), its bytes a header naming the serializer and then the
serializer's bytes, and the digest of those bytes returned by ``write`` and checked by
``read`` before anything is loaded.

A write never leaves half a result where a reader looks: on a file system whose rename
is atomic (a local or mounted directory, ``file://``) the bytes go to a temporary name
in the same directory and are moved into place; on an object store (S3, GCS, Azure) and
in ``memory://`` they are one ``pipe_file``, a single PUT (or a multipart upload, which
S3 and GCS also publish whole). On any other file system a torn write is possible, and
the digest check turns it into a miss.

What the store holds is loaded, so whoever can write the storage can run code in the
processes that read it: give the bucket or directory the access you give the code.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import fsspec
from headwater.errors import ConfigurationError, StoreError
from headwater.results import ResultMissing, ResultNotPersisted, ResultStore, check_digest
from headwater.plugins.local_results import load_result, result_header, serialize, sweep_stale_temp_files

_LOCATION = re.compile(r"[0-9a-f]{64}")

#: Protocols whose file systems rename atomically: written to a temporary name, then moved.
RENAMING_PROTOCOLS = frozenset({"file", "local"})

#: What to install for a protocol fsspec knows but cannot load (its package is missing).
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gcs": "gcsfs", "gs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs", "sftp": "paramiko", "ssh": "paramiko", "smb": "smbprotocol", "hdfs": "pyarrow"}

_swept: set[str] = set()  # local roots whose stale temporary files this process deleted
_swept_lock = threading.Lock()


class FsspecResultStore(ResultStore):
    """Persisted results on an fsspec file system ``fs`` under the path ``root``
    (:meth:`from_url` makes one from ``s3://bucket/prefix``, ``file:///dir``,
    ``memory://name``...). ``serializers`` maps the names a task's ``result_serializer``
    may give to serializers. ``url`` names the storage in messages."""

    def __init__(self, fs: Any, root: str, serializers: dict[str, Any], url: str = "") -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.serializers = serializers
        self.url = url or f"{_protocol(fs)}://{self.root}"
        self.renames = bool(RENAMING_PROTOCOLS.intersection(_protocols(fs)))
        self._ready = False

    @classmethod
    def from_url(cls, url: str, serializers: dict[str, Any], **storage_options: Any) -> FsspecResultStore:
        """The store at ``url``; ``storage_options`` go to the file system (credentials,
        ``endpoint_url``...). A scheme fsspec does not know, or whose package is not
        installed, is a :class:`~headwater.errors.ConfigurationError` naming what to install."""
        scheme = url.partition("://")[0].lower()
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError:
            package = PACKAGES.get(scheme, f"the fsspec implementation of {scheme}://")
            raise ConfigurationError(
                f"result storage {url!r} needs {package}, which is not installed; "
                f"pip install {package}") from None
        except ValueError as exc:
            raise ConfigurationError(f"result storage {url!r}: {exc}") from None
        return cls(fs, root, serializers, url=url.rstrip("/"))

    def location_for(self, key: str) -> str:
        """The name a result under ``key`` gets: the SHA-256 of the key, in hex."""
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def _path(self, location: str) -> str:
        # Only names this store makes are opened: a tampered index row cannot make a read
        # (or a delete) leave the storage root.
        if not isinstance(location, str) or _LOCATION.fullmatch(location) is None:
            raise ResultMissing(f"invalid result location {location!r}")
        return f"{self.root}/{location}" if self.root else location

    def _where(self, location: str) -> str:
        return f"result {self.url}/{location}"

    def _ensure_root(self) -> None:
        """Create the root directory on a file system that has directories and renames
        (object stores have neither, and creating a bucket is not this store's business)."""
        if self._ready:
            return
        if self.renames:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot write results to {self.url} (HEADWATER_RESULT_STORAGE): "
                                 f"{exc.strerror or exc}") from None
            with _swept_lock:
                first = self.root not in _swept
                _swept.add(self.root)
            if first:
                sweep_stale_temp_files(Path(self.root))
        self._ready = True

    def write(self, key: str, value: Any, serializer: str = "cloudpickle") -> tuple[str, int, str]:
        blob = serialize(value, serializer, self.serializers)
        self._ensure_root()
        data = result_header(serializer) + blob
        location = self.location_for(key)
        path = self._path(location)
        try:
            if self.renames:
                self._write_then_move(location, path, data)
            else:
                self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        except (FileNotFoundError, PermissionError) as exc:
            # No such bucket or directory, or no right to write there: a setup mistake.
            raise StoreError(f"cannot write results to {self.url} (HEADWATER_RESULT_STORAGE): "
                             f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a network error, a full disk: this result only
            raise ResultNotPersisted(f"cannot write {self._where(location)}: {type(exc).__name__}: {exc}") from exc
        return location, len(blob), "sha256:" + hashlib.sha256(data).hexdigest()

    def _write_then_move(self, location: str, path: str, data: bytes) -> None:
        # The temporary name is the one the local store uses, so its sweep of files left
        # by killed processes applies here too.
        tmp = f"{self.root}/.{location[:16]}-{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                fileno = getattr(handle, "fileno", None)
                if fileno is not None:
                    os.fsync(fileno())  # durable before it is visible under its name
            self.fs.mv(tmp, path)
        except BaseException:
            try:
                self.fs.rm_file(tmp)
            except Exception:
                pass
            raise

    def read(self, location: str, digest: str | None = None) -> Any:
        path = self._path(location)
        where = self._where(location)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ResultMissing(f"{where} does not exist (deleted?)") from None
        except Exception as exc:  # unreachable storage, no right to read: a miss, not a crash
            raise ResultMissing(f"{where} cannot be read: {type(exc).__name__}: {exc}") from None
        check_digest(data, digest, where)  # before anything is loaded
        return load_result(data, where, self.serializers)

    def delete(self, location: str) -> None:
        try:
            self.fs.rm_file(self._path(location))
        except (FileNotFoundError, ResultMissing):
            pass


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _protocol(fs: Any) -> str:
    return _protocols(fs)[0]
