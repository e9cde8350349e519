"""Local result storage: one file per result under ``HEADWATER_LOCAL_STORAGE_PATH``.

File names are a SHA-256 of the result key, so no key (``../../x`` included) can name a
path outside the directory. Each file is written to a temporary name and renamed into
place, so a reader never sees half a result; temporary files a killed process left
behind are deleted after an hour. The directories it creates are private (0700) and
result files 0600, whatever the umask.

Results are pickles, and loading one can run code, so a read loads only bytes that
(1) lie in a storage directory owned by the current user (or root) that neither group
nor others can write, (2) are a regular file owned by the current user (or root) that
neither group nor others can write (OpenSSH's StrictModes rule), and (3) have the digest
their cache entry recorded. Anything else is a miss (``ResultMissing``: one warning, and
the task runs again) whose message names the path and the ``chmod``/``chown`` fix.
Directories above the storage directory are not checked: the directory is opened once
and both checks are made on what was opened, so a parent that others can write can only
swap in a whole directory, which must pass the same check.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from headwater.errors import ConfigurationError, StoreError
from headwater.plugin_manager import hookimpl
from headwater.policy import StatePolicy, WrappingPolicy
from headwater.results import (
    RESULT_DIGEST,
    ResultMissing,
    ResultNotPersisted,
    ResultStore,
    Serializer,
    StoredResultState,
    check_digest,
    stored_result_state,
    unknown_serializer,
)
from headwater.settings import storage_scheme
from headwater.states import State

from .private_files import foreign, make_private_dirs, others_can_write, safely_owned, user_name

_LOCATION = re.compile(r"[0-9a-f]{64}")
_MAGIC = b"HWR1"  # header: magic, serializer name length, serializer name, then the bytes
_TEMP = re.compile(r"\.[0-9a-f]{16}-.+\.tmp")  # a write in progress, or one its process never finished

#: Seconds after which a temporary file is taken for left over by a killed process.
STALE_TEMP_SECONDS = 3600.0

_swept: set[str] = set()  # directories swept by this process
_CHECKS_OWNERS = hasattr(os, "geteuid") and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# No symlink followed; no hang on a FIFO someone made in its place (no effect on files).
_O_FILE = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | _O_CLOEXEC
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC


class CloudpickleSerializer:
    """Any Python object cloudpickle can pickle (``"cloudpickle"``, the default).
    Loading runs code: trusted, local data only."""

    def dumps(self, value: Any) -> bytes:
        """The value pickled by cloudpickle (functions and classes by value included)."""
        # Imported on the first write, not with the plugin: importing cloudpickle takes
        # about 25 ms (python -X importtime), and a flow that persists nothing never needs it.
        import cloudpickle

        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        """The value back (plain ``pickle`` reads what cloudpickle wrote)."""
        return pickle.loads(data)


class JSONSerializer:
    """JSON-compatible values only (``"json"``); readable by any tool."""

    def dumps(self, value: Any) -> bytes:
        """The value as JSON text, UTF-8."""
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        """The value back from JSON."""
        return json.loads(data)


class CompressedSerializer:
    """Another serializer's bytes, compressed with LZMA (``"compressed/pickle"``,
    ``"compressed/json"``, as Prefect names them): smaller files for large results."""

    def __init__(self, inner: Serializer) -> None:
        self.inner = inner

    def dumps(self, value: Any) -> bytes:
        import lzma  # import time: only compressed results need it

        return lzma.compress(self.inner.dumps(value))

    def loads(self, data: bytes) -> Any:
        import lzma  # import time: only compressed results need it

        return self.inner.loads(lzma.decompress(data))


def builtin_serializers() -> dict[str, Serializer]:
    """The serializers this plugin registers, by name: ``"cloudpickle"`` and ``"json"``,
    and Prefect's names for them: ``"pickle"`` (cloudpickle, as Prefect's pickle
    serializer uses it), ``"compressed/pickle"`` and ``"compressed/json"`` (LZMA)."""
    pickled, as_json = CloudpickleSerializer(), JSONSerializer()
    return {"cloudpickle": pickled, "json": as_json, "pickle": pickled,
            "compressed/pickle": CompressedSerializer(pickled), "compressed/json": CompressedSerializer(as_json)}


class ResultUntrusted(ResultMissing):
    """A result file, or its directory, that another user owns or can write: not loaded."""


def _check(st: os.stat_result, path: str, kind: str) -> None:
    """Refuse ``path`` (a result file or the storage directory) unless the current user
    (or root, who can change anything anyway) owns it and neither group nor others can
    write it."""
    if safely_owned(st):
        return
    if foreign(st):
        me = user_name(os.geteuid())
        other = "delete it" if kind == "result file" else \
            "point HEADWATER_LOCAL_STORAGE_PATH at a directory of your own"
        raise ResultUntrusted(
            f"{kind} {path} is owned by {user_name(st.st_uid)} (uid {st.st_uid}), not by you ({me}); "
            f"results are pickles, loaded only from your own files: `chown {me} {path}` if you "
            f"trust it, else {other}")
    if others_can_write(st):
        raise ResultUntrusted(
            f"{kind} {path} can be written by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"results are pickles, loaded only from where no one else can write: `chmod go-w {path}`")


def result_header(serializer: str) -> bytes:
    """What a result's bytes start with: a magic string and the serializer's name (the
    serializer's own bytes follow). Shared by every store that keeps headwater's format."""
    name = serializer.encode()
    if len(name) > 255:
        raise ResultNotPersisted(f"serializer name {serializer[:40]!r}... is longer than 255 bytes")
    return _MAGIC + bytes([len(name)]) + name


def serialize(value: Any, serializer: str, serializers: dict[str, Any]) -> bytes:
    """``value`` as the named serializer's bytes: an unknown name is
    :class:`~headwater.errors.UnknownComponentError`, a value it cannot take
    :class:`ResultNotPersisted`. Shared by every store that keeps headwater's format."""
    codec = serializers.get(serializer)
    if codec is None:
        raise unknown_serializer(serializer, serializers)
    try:
        return codec.dumps(value)
    except Exception as exc:
        raise ResultNotPersisted(f"{serializer} cannot serialize it: {type(exc).__name__}: {exc}") from exc


def load_result(data: bytes, where: str, serializers: dict[str, Any]) -> Any:
    """The value in ``data`` (a header from :func:`result_header`, then the serializer's
    bytes), loaded by the serializer the header names; :class:`ResultMissing` naming
    ``where`` (e.g. ``"result file /path"``) when it is not a headwater result, is
    truncated, needs a serializer not registered, or cannot be loaded. Check the digest
    before calling: loading a pickle runs code."""
    if not data.startswith(_MAGIC) or len(data) < 5:
        raise ResultMissing(f"{where} is not a headwater result (corrupted?)")
    size = data[4]
    if len(data) < 5 + size:
        raise ResultMissing(f"{where} is truncated (corrupted?)")
    serializer = data[5:5 + size].decode(errors="replace")
    codec = serializers.get(serializer)
    if codec is None:
        raise ResultMissing(f"{where} needs serializer {serializer!r}, not registered")
    try:
        return codec.loads(data[5 + size:])
    except Exception as exc:
        raise ResultMissing(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None


class LocalResultStore(ResultStore):
    """The default result store: one file per result under ``path``
    (``HEADWATER_LOCAL_STORAGE_PATH``), named by a SHA-256 of its key, written atomically
    and loaded only when trusted (the module's docstring says how). ``serializers`` maps
    the names a task's ``result_serializer`` may give to serializers."""

    def __init__(self, path: Path, serializers: dict[str, Any]) -> None:
        self.path = Path(path)
        self.serializers = serializers
        self._ready = False

    def _ensure_dir(self) -> None:
        if self._ready:
            return
        try:
            make_private_dirs(self.path)
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

    def write(self, key: str, value: Any, serializer: str = "cloudpickle") -> tuple[str, int, str]:
        blob = serialize(value, serializer, self.serializers)
        self._ensure_dir()
        name = self.location_for(key)
        header = result_header(serializer)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name[:16]}-", suffix=".tmp")
        digest = hashlib.sha256(header)
        digest.update(blob)  # the digest of the file's bytes, as a read sees them
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # whatever the umask (mkstemp's 0600 is masked by it)
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
        return name, len(blob), "sha256:" + digest.hexdigest()

    def _file(self, location: str) -> str:
        # Only names this store makes (64 hex digits) are opened: a tampered index row
        # cannot make a read leave the directory. A string path keeps cache hits cheap.
        if not isinstance(location, str) or _LOCATION.fullmatch(location) is None:
            raise ResultMissing(f"invalid result location {location!r}")
        return os.path.join(self.path, location)

    def read(self, location: str, digest: str | None = None) -> Any:
        path = self._file(location)
        try:
            if _CHECKS_OWNERS:
                data = self._read_trusted(location, path)
            else:
                with open(path, "rb") as handle:
                    data = handle.read()
        except OSError as exc:
            raise ResultMissing(f"result file {path} cannot be read: {exc.strerror or exc}") from None
        check_digest(data, digest, f"result file {path}")  # before anything is unpickled
        return load_result(data, f"result file {path}", self.serializers)

    def _read_trusted(self, location: str, path: str) -> bytes:
        """The file's bytes, if it and the storage directory pass the ownership rule.

        The directory is opened and checked first, then the file is opened through that
        open directory (never through a symlink) and checked: what is checked is what is
        read, whatever is renamed meanwhile."""
        directory = os.open(self.path, _O_DIR)
        try:
            _check(os.fstat(directory), str(self.path), "storage directory")
            fd = os.open(location, _O_FILE, dir_fd=directory)
        finally:
            os.close(directory)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ResultMissing(f"result file {path} is not a regular file")
            _check(st, path, "result file")
            parts = []
            want = st.st_size + 1
            while True:  # a regular file: normally one read for the bytes, one for the end
                chunk = os.read(fd, want)
                if not chunk:
                    break
                parts.append(chunk)
                want = 1 << 20  # it grew meanwhile: the rest
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

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


#: What to install for a ``HEADWATER_RESULT_STORAGE`` URL whose scheme no plugin serves.
STORAGE_PACKAGES = {
    "s3": "'headwater-fsspec[s3]'", "s3a": "'headwater-fsspec[s3]'",
    "gcs": "'headwater-fsspec[gcs]'", "gs": "'headwater-fsspec[gcs]'",
    **{scheme: "headwater-fsspec" for scheme in ("file", "memory", "az", "abfs", "abfss", "hdfs", "sftp",
                                                 "ssh", "smb")},
}


def local_result_store(where: str | Path, session: Any) -> LocalResultStore:
    """The local result store in the directory ``where`` (a path, or a ``local://`` URL),
    with the session's serializers: the registry's ``"local"`` result store."""
    text = str(where)
    path = text.partition("://")[2] if "://" in text else text
    serializers = {name: s for name, s, _ in session.registry.items("serializer")}
    return LocalResultStore(Path(path).expanduser(), serializers)


def configured_result_store(session: Any) -> ResultStore:
    """The result store the settings name: ``HEADWATER_RESULT_STORAGE`` (a URL, made by
    the result store registered for its scheme, or a plain path), else the local store
    in ``HEADWATER_LOCAL_STORAGE_PATH``."""
    settings = session.settings
    storage = getattr(settings, "result_storage", "")
    scheme = storage_scheme(storage)
    if not storage:
        return local_result_store(settings.local_storage_path, session)
    if not scheme:
        return local_result_store(storage, session)
    if scheme not in session.registry.names("result_store"):
        served = ", ".join(f"{name}://" for name in session.registry.names("result_store"))
        package = STORAGE_PACKAGES.get(scheme)
        fix = f"install one, e.g. pip install {package}" if package else \
            "install a plugin that registers it (registry.add_result_store), or give a plain path"
        raise ConfigurationError(
            f"{settings.describe('RESULT_STORAGE', storage)}: no installed plugin serves {scheme}:// "
            f"(served: {served}); {fix}")
    return session.registry.get("result_store", scheme)(storage, session)


@hookimpl
def headwater_register_components(registry: Any) -> None:
    for name, serializer in builtin_serializers().items():
        registry.add_serializer(name, serializer, source="local_results")
    registry.add_result_store("local", local_result_store, source="local_results")


@hookimpl(trylast=True)
def headwater_make_result_store(flow: Any, session: Any) -> ResultStore:
    return configured_result_store(session)


class PersistedResults(WrappingPolicy):
    """Adds ``persist_result`` to another policy: a run whose task says
    ``persist_result=True`` (or says nothing, in a flow that says so) keeps its result in
    the result store under ``run-<run id>``, unless the inner policy names a key (a
    cache key wins). With ``cache_result_in_memory=False`` (which implies persisting)
    the final state holds only where the result is, and reads it back when asked."""

    def __init__(self, inner: StatePolicy, task: Any) -> None:
        super().__init__(inner)
        # A policy lives for one flow run, so "as the flow says" (None) is settled at the
        # first result; and the inner policy is asked only if it can name a key at all:
        # both run for every task run.
        self.wanted: bool | None = task.spec.persist_result
        self.in_memory = task.spec.cache_result_in_memory
        if not self.in_memory and self.wanted is None:
            self.wanted = True  # a result kept out of memory must be kept somewhere
        self.inner_names_keys = getattr(type(inner), "result_key", StatePolicy.result_key) \
            is not StatePolicy.result_key
        if not self.in_memory:
            # Only then: the usual task keeps the inner policy's own method (bound by
            # WrappingPolicy), so no frame of delegation per task run, and an answer the
            # engine refuses still names the inner policy.
            self.propose_completed = self._completed_out_of_memory  # type: ignore[method-assign]

    def _completed_out_of_memory(self, ctx: Any, state: State) -> State:
        """With ``cache_result_in_memory=False``, a result safely persisted is dropped from
        the state: ``state.result()`` reads it back from the result store."""
        state = self.inner.propose_completed(ctx, state)
        run = ctx.task_run
        if run.result_location is None or not state.is_completed() or \
                isinstance(state, StoredResultState):
            return state
        if getattr(ctx.session, "store", None) is None:
            # A remote worker (no run store): the flow process writes the result later,
            # and the value travels back to it in the state.
            return state
        return stored_result_state(state, ctx.result_store, run.result_location,
                                   run.stash.get(RESULT_DIGEST, None))

    def result_key(self, ctx: Any) -> str | None:
        if self.inner_names_keys:
            key = self.inner.result_key(ctx)
            if key is not None:
                return key
        wanted = self.wanted
        if wanted is None:
            # The flow run's choice (a subflow's is its parent's unless its flow says), else
            # the flow's and the setting, for a context without a flow run's resources.
            decided = getattr(ctx.resources, "persisting", None)
            wanted = self.wanted = decided if isinstance(decided, bool) else \
                flow_persists(ctx.flow, ctx.session if ctx.resources is not None else None)
        return f"run-{ctx.task_run.id}" if wanted else None


def flow_persists(flow: Any, session: Any) -> bool:
    """Whether results are persisted by default in a run of ``flow``: its
    ``persist_result``, else ``HEADWATER_PERSIST_RESULTS``."""
    said = flow.spec.persist_result if flow is not None else None
    if said is not None:
        return bool(said)
    settings = getattr(session, "settings", None)
    return bool(getattr(settings, "persist_results", False))


@hookimpl(wrapper=True)
def headwater_make_state_policy(task: Any, session: Any) -> Any:
    """Wrap the policy of every task that may persist its result (``persist_result``
    not ``False``) in a :class:`PersistedResults`."""
    policy = yield
    if policy is not None and task.spec.persist_result is not False:
        return PersistedResults(policy, task)
    return policy
