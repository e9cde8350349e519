"""Local result storage: one file per result under ``HEADWATER_LOCAL_STORAGE_PATH``.

File names are a SHA-256 of the result key, so no key (``../../x`` included) can name a
path outside the directory. Each file is written to a temporary name and renamed into
place, so a reader never sees half a result; temporary files a killed process left
behind are deleted after an hour. The directory is created private (0700).
Results are trusted local pickles: never point this at files from someone else.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from headwater.errors import StoreError
from headwater.plugin_manager import hookimpl
from headwater.results import (
    CloudpickleSerializer,
    JSONSerializer,
    ResultMissing,
    ResultNotPersisted,
    ResultStore,
    unknown_serializer,
)

_LOCATION = re.compile(r"[0-9a-f]{64}")
_MAGIC = b"HWR1"  # header: magic, serializer name length, serializer name, then the bytes
_TEMP = re.compile(r"\.[0-9a-f]{16}-.+\.tmp")  # a write in progress, or one its process never finished

#: Seconds after which a temporary file is taken for left over by a killed process.
STALE_TEMP_SECONDS = 3600.0

_swept: set[str] = set()  # directories swept by this process


class LocalResultStore(ResultStore):
    def __init__(self, path: Path, serializers: dict[str, Any]) -> None:
        self.path = Path(path)
        self.serializers = serializers
        self._ready = False

    def _ensure_dir(self) -> None:
        if self._ready:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe-", delete=True)
            probe.close()
        except OSError as exc:
            raise StoreError(
                f"cannot write results to {self.path} (HEADWATER_LOCAL_STORAGE_PATH): "
                f"{exc.strerror or exc}"
            ) from None
        self._ready = True
        if str(self.path) not in _swept:
            _swept.add(str(self.path))
            sweep_stale_temp_files(self.path)

    def location_for(self, key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def write(self, key: str, value: Any, serializer: str = "cloudpickle") -> tuple[str, int]:
        codec = self.serializers.get(serializer)
        if codec is None:
            raise unknown_serializer(serializer, self.serializers)
        try:
            blob = codec.dumps(value)
        except Exception as exc:
            raise ResultNotPersisted(f"{serializer} cannot serialize it: {type(exc).__name__}: {exc}") from exc
        self._ensure_dir()
        name = self.location_for(key)
        header = _MAGIC + bytes([len(serializer)]) + serializer.encode()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(header)
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path / name)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ResultNotPersisted(f"cannot write {self.path / name}: {exc}") from exc
        return name, len(blob)

    def _file(self, location: str) -> str:
        # Only names this store makes (64 hex digits) are opened: a tampered index row
        # cannot make a read leave the directory. A string path keeps cache hits cheap.
        if not isinstance(location, str) or _LOCATION.fullmatch(location) is None:
            raise ResultMissing(f"invalid result location {location!r}")
        return os.path.join(self.path, location)

    def read(self, location: str) -> Any:
        path = self._file(location)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ResultMissing(f"result file {path} cannot be read: {exc.strerror or exc}") from None
        if not data.startswith(_MAGIC) or len(data) < 5:
            raise ResultMissing(f"result file {path} is not a headwater result (corrupted?)")
        size = data[4]
        if len(data) < 5 + size:
            raise ResultMissing(f"result file {path} is truncated (corrupted?)")
        serializer = data[5:5 + size].decode(errors="replace")
        codec = self.serializers.get(serializer)
        if codec is None:
            raise ResultMissing(f"result file {path} needs serializer {serializer!r}, not registered")
        try:
            return codec.loads(data[5 + size:])
        except Exception as exc:
            raise ResultMissing(f"result file {path} cannot be loaded: {type(exc).__name__}: {exc}") from None

    def delete(self, location: str) -> None:
        try:
            os.unlink(self._file(location))
        except (OSError, ResultMissing):
            pass


def sweep_stale_temp_files(directory: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temporary files of result writes that never finished (their process
    was killed between writing and renaming) and are older than ``older_than`` seconds,
    so a write still in progress in another process is left alone; return how many.
    Done once per directory and process, the first time a result is written there."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if _TEMP.fullmatch(entry.name) is None:
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete: left alone
            continue
    return removed


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_serializer("cloudpickle", CloudpickleSerializer(), source="local_results")
    registry.add_serializer("json", JSONSerializer(), source="local_results")
    registry.add_result_store("local", LocalResultStore, source="local_results")


@hookimpl(trylast=True)
def headwater_make_result_store(flow: Any, session: Any) -> ResultStore:
    serializers = {name: s for name, s, _ in session.registry.items("serializer")}
    return LocalResultStore(session.settings.local_storage_path, serializers)
