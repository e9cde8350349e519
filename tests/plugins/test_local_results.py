"""local_results: result files under HEADWATER_LOCAL_STORAGE_PATH, safe names, atomic writes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from headwater import flow, task
from headwater.errors import StoreError
from headwater.plugins.local_results import CloudpickleSerializer, JSONSerializer, LocalResultStore
from headwater.results import ResultMissing, ResultNotPersisted
from headwater.session import Session


def make_store(path: Path) -> LocalResultStore:
    return LocalResultStore(path, {"cloudpickle": CloudpickleSerializer(), "json": JSONSerializer()})


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_a_written_result_reads_back(tmp_path: Path) -> None:
    """write then read returns an equal value; the size is the serialized length."""
    store = make_store(tmp_path / "results")
    location, size, digest = store.write("k", {"rows": [1, 2, 3]})
    assert store.read(location) == {"rows": [1, 2, 3]}
    assert size > 0
    # The digest is of the file's bytes; a read given it checks them before loading.
    assert digest == "sha256:" + hashlib.sha256((tmp_path / "results" / location).read_bytes()).hexdigest()
    assert store.read(location, digest) == {"rows": [1, 2, 3]}
    with pytest.raises(ResultMissing, match="does not match the digest"):
        store.read(location, "sha256:" + "0" * 64)


def test_file_names_are_hashes_of_the_key(tmp_path: Path) -> None:
    """The file is named by the SHA-256 of the key, never the raw key."""
    store = make_store(tmp_path / "results")
    location, _, _ = store.write("customer report", 1)
    assert location == hashlib.sha256(b"customer report").hexdigest()
    assert [p.name for p in (tmp_path / "results").iterdir()] == [location]


def test_a_path_like_key_cannot_leave_the_directory(tmp_path: Path) -> None:
    """A key like ``../../x`` writes one file inside the storage directory and nothing
    anywhere else."""
    root = tmp_path / "a" / "b" / "results"
    root.mkdir(parents=True)
    before = every_file(tmp_path)
    store = make_store(root)
    for key in ("../../x", "/etc/passwd", "..\\..\\y", "x/../../../z"):
        location, _, _ = store.write(key, key)
        assert store.read(location) == key
    created = every_file(tmp_path) - before
    assert len(created) == 4
    assert all(p.parent == root for p in created)


def test_reading_a_location_outside_the_directory_is_refused(tmp_path: Path) -> None:
    """A location that is not a hash (e.g. from a tampered index) is never opened."""
    (tmp_path / "secret").write_text("do not read")
    store = make_store(tmp_path / "results")
    with pytest.raises(ResultMissing, match="invalid result location"):
        store.read("../secret")


def test_the_directory_is_created_private(tmp_path: Path) -> None:
    """The storage directory is created with mode 0700 and files with 0600, whatever
    the umask."""
    old = os.umask(0)
    try:
        store = make_store(tmp_path / "results")
        location, _, _ = store.write("k", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "results" / location).stat().st_mode) == 0o600


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails before the rename leaves the previous result intact and no
    temporary file behind."""
    store = make_store(tmp_path / "results")
    location, _, _ = store.write("k", "old value")

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ResultNotPersisted, match="No space left"):
        store.write("k", "new value")
    monkeypatch.undo()
    assert store.read(location) == "old value"
    assert [p.name for p in (tmp_path / "results").iterdir()] == [location]


def test_a_successful_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """After several writes only the result files remain (no ``.tmp`` leftovers)."""
    store = make_store(tmp_path / "results")
    for i in range(5):
        store.write("same key", i)
    assert len(list((tmp_path / "results").iterdir())) == 1


def test_temporary_files_a_killed_process_left_are_swept_once_stale(tmp_path: Path) -> None:
    """Temporary files of writes that never finished (the process was killed between
    writing and renaming) are deleted when a process first writes a result there, once
    they are over an hour old; a write in progress (a fresh temporary file), results and
    files that are not ours stay."""
    import time

    results = tmp_path / "results"
    results.mkdir(mode=0o700)
    stale = results / ".0123456789abcdef-a1b2c3.tmp"
    fresh = results / ".fedcba9876543210-d4e5f6.tmp"
    other = results / "notes.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"half a result")
    two_hours_ago = time.time() - 7200
    for path in (stale, other):
        os.utime(path, (two_hours_ago, two_hours_ago))
    location, _, _ = make_store(results).write("k", 1)
    assert {p.name for p in results.iterdir()} == {location, fresh.name, other.name}


def test_a_corrupted_file_is_reported_missing(tmp_path: Path) -> None:
    """A file that is not a headwater result, or a truncated one, raises ResultMissing."""
    store = make_store(tmp_path / "results")
    location, _, _ = store.write("k", list(range(100)))
    path = tmp_path / "results" / location
    full = path.read_bytes()
    path.write_bytes(full[:40])
    with pytest.raises(ResultMissing, match="cannot be loaded"):
        store.read(location)
    path.write_bytes(full[:8])
    with pytest.raises(ResultMissing, match="truncated"):
        store.read(location)
    path.write_bytes(b"junk")
    with pytest.raises(ResultMissing, match="corrupted"):
        store.read(location)


def test_an_unserializable_value_is_not_persisted(tmp_path: Path) -> None:
    """A value the serializer cannot handle raises ResultNotPersisted and writes nothing."""
    store = make_store(tmp_path / "results")
    with pytest.raises(ResultNotPersisted, match="json"):
        store.write("k", {1, 2}, "json")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_an_unwritable_storage_path_is_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    """A storage path under a plain file cannot be created: StoreError naming
    HEADWATER_LOCAL_STORAGE_PATH and the path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = make_store(blocker / "results")
    with pytest.raises(StoreError, match=r"HEADWATER_LOCAL_STORAGE_PATH") as info:
        store.write("k", 1)
    assert str(blocker / "results") in str(info.value)


def test_a_flow_with_unwritable_storage_fails_clearly_and_writes_nothing_outside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached task with HEADWATER_LOCAL_STORAGE_PATH unusable: the flow fails with the
    error naming the setting; no file appears outside the storage path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("HEADWATER_LOCAL_STORAGE_PATH", str(blocker / "results"))
    home = Path(os.environ["HEADWATER_HOME"])

    @task(cache_key_fn=lambda c, p: "../../escape")
    def work() -> int:
        return 1

    @flow
    def run() -> int:
        return work()

    before = every_file(tmp_path)
    with Session():
        with pytest.raises(StoreError, match="HEADWATER_LOCAL_STORAGE_PATH"):
            run()
    created = every_file(tmp_path) - before
    # Only the run store (under HEADWATER_HOME) may appear; no result file anywhere.
    assert all(home in p.parents or p == home for p in created), created


def test_cached_results_stay_under_the_storage_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a custom HEADWATER_LOCAL_STORAGE_PATH, a cached task with a path-like key
    writes its result there and nowhere else."""
    results = tmp_path / "custom" / "results"
    monkeypatch.setenv("HEADWATER_LOCAL_STORAGE_PATH", str(results))
    home = Path(os.environ["HEADWATER_HOME"])

    @task(cache_key_fn=lambda c, p: "../../../x")
    def work() -> int:
        return 1

    @flow
    def run() -> int:
        return work()

    before = every_file(tmp_path)
    with Session():
        assert run() == 1
    created = every_file(tmp_path) - before
    outside = {p for p in created if not (home in p.parents or p == home)}
    assert {p for p in outside if p.is_file()} == {next(results.iterdir())}
    assert all(results in p.parents or p == results or p in results.parents for p in outside)


def test_an_unknown_result_serializer_fails_before_the_task_body_runs():
    """result_serializer='yaml' (not registered) is refused when the task is first run in
    a flow run, before its body: the error names the task, the value and the registered
    serializers, and the body never ran."""
    from headwater import flow, task
    from headwater.errors import UnknownComponentError

    calls = []

    @task(result_serializer="yaml", persist_result=True)
    def slow():
        calls.append(1)
        return 1

    @flow
    def pipeline():
        return slow()

    with pytest.raises(UnknownComponentError) as info:
        pipeline()
    message = str(info.value)
    assert "task 'slow'" in message and "result_serializer='yaml'" in message
    assert "'cloudpickle'" in message and "'json'" in message
    assert calls == []


def test_prefect_serializer_names_write_and_read_back(tmp_path):
    """``"pickle"``, ``"compressed/pickle"`` and ``"compressed/json"`` (Prefect's names)
    work; the compressed ones are smaller for repetitive data."""
    from headwater.plugins.local_results import builtin_serializers

    store = LocalResultStore(tmp_path / "results", builtin_serializers())
    value = {"rows": ["the same line"] * 2000}
    sizes = {}
    for name in ("pickle", "compressed/pickle", "compressed/json"):
        location, size, digest = store.write(f"key-{name}", value, name)
        assert store.read(location, digest=digest) == value
        sizes[name] = size
    assert sizes["compressed/pickle"] < sizes["pickle"] / 10
