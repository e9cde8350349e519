"""A cache hit returns what the task computed, or the task runs again.

* A result file changed after it was written (another valid result, truncated,
  garbage) does not match the digest in its cache entry: one warning naming the key and
  the file, then the task runs and rewrites the entry.
* A result file owned by someone else, or in a storage directory someone else owns or
  can write, is never loaded (pickles run code): one warning naming the path and the
  chmod/chown fix, then the task runs. Proved with a planted pickle that would create a
  marker file if it were ever unpickled.
* The storage directories headwater creates are 0700 and result files 0600, whatever
  the umask.
"""

from __future__ import annotations

import logging
import os
import pickle
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest

from headwater import flow, task
from headwater.session import Session

KEY = "integrity-key"


def make_flow() -> tuple[Any, list[int]]:
    calls: list[int] = []

    @task(cache_key_fn=lambda context, parameters: KEY)
    def compute() -> dict[str, int]:
        calls.append(1)
        return {"value": len(calls)}

    @flow
    def pipeline() -> tuple[str, Any]:
        state = compute(return_state=True)
        return state.name, state.result()

    return pipeline, calls


def result_file(session: Session) -> Path:
    entry = session.store.read_cache_entry(KEY)
    return Path(session.settings.local_storage_path) / entry.location


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def result_bytes(value: Any, tmp_path: Path) -> bytes:
    """The file the local result store writes for ``value`` (a valid headwater result)."""
    from headwater.plugins.local_results import CloudpickleSerializer, LocalResultStore

    store = LocalResultStore(tmp_path / "elsewhere", {"cloudpickle": CloudpickleSerializer()})
    location = store.write("another", value)[0]
    return (tmp_path / "elsewhere" / location).read_bytes()


def test_a_result_file_replaced_by_another_valid_result_is_not_returned(
        headwater_session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipeline, calls = make_flow()
    assert pipeline() == ("Completed", {"value": 1})
    path = result_file(headwater_session)
    path.write_bytes(result_bytes({"value": 99}, tmp_path))  # a well-formed, wrong result
    caplog.clear()

    assert pipeline() == ("Completed", {"value": 2})  # ran again: 99 is never returned
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert KEY in warnings[0] and str(path) in warnings[0] and "digest" in warnings[0]
    caplog.clear()
    assert pipeline() == ("Cached", {"value": 2})  # the entry was rewritten: a clean hit
    assert cache_warnings(caplog) == [] and len(calls) == 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header only"])
def test_a_damaged_result_file_is_a_miss_and_the_task_runs_again(
        headwater_session: Session, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    pipeline, calls = make_flow()
    pipeline()
    path = result_file(headwater_session)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(len(data)),
                      "empty": b"", "header only": data[:16]}[damage])
    caplog.clear()
    assert pipeline() == ("Completed", {"value": 2})
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and KEY in warnings[0], warnings
    assert pipeline() == ("Cached", {"value": 2})


# -- files and directories of other users ---------------------------------------------------

needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="chown to another user needs root")


class Planted:
    """Unpickling this creates the file ``path``: evidence that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def plant(path: Path, marker: Path) -> None:
    """What an attacker writes: a well-formed result file holding a hostile pickle."""
    payload = pickle.dumps(Planted(marker))
    path.write_bytes(b"HWR1" + bytes([len(b"cloudpickle")]) + b"cloudpickle" + payload)


@needs_root
@pytest.mark.parametrize("setup", ["file owned by nobody", "directory mode 0777",
                                   "directory owned by nobody"])
def test_a_result_another_user_could_plant_is_never_unpickled(
        headwater_session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture, setup: str) -> None:
    nobody = pwd.getpwnam("nobody")
    pipeline, calls = make_flow()
    pipeline()
    path = result_file(headwater_session)
    # An entry without a digest (as written before entries had one): only the ownership
    # rule stands between the planted file and pickle.loads.
    store = headwater_session.store
    entry = store.read_cache_entry(KEY)
    entry.digest = None
    store.write_cache_entry(entry)
    marker = tmp_path / "planted-pickle-was-loaded"
    plant(path, marker)
    directory = path.parent
    if setup == "file owned by nobody":
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    elif setup == "directory mode 0777":
        os.chmod(directory, 0o777)
    else:
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    caplog.clear()

    try:
        assert pipeline() == ("Completed", {"value": 2})  # recomputed
        assert not marker.exists(), "the planted pickle was loaded"
        warnings = cache_warnings(caplog)
        assert len(warnings) == 1, warnings
        fix = "chown" if "nobody" in setup else "chmod"
        target = path if setup == "file owned by nobody" else directory
        assert str(target) in warnings[0] and fix in warnings[0], warnings[0]
    finally:
        os.chmod(directory, 0o700)
        os.chown(directory, 0, 0)


@needs_root
def test_after_fixing_the_owner_the_result_is_used_again(
        headwater_session: Session, caplog: pytest.LogCaptureFixture) -> None:
    nobody = pwd.getpwnam("nobody")
    pipeline, calls = make_flow()
    pipeline()
    directory = result_file(headwater_session).parent
    os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    assert pipeline() == ("Completed", {"value": 2})
    os.chown(directory, os.geteuid(), os.getegid())  # the fix the warning names
    caplog.clear()
    assert pipeline() == ("Cached", {"value": 2})
    assert cache_warnings(caplog) == []


# -- private storage ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o002, 0o277])
def test_storage_directories_are_0700_and_results_0600_whatever_the_umask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    storage = tmp_path / "data" / "headwater" / "storage"  # none of it exists yet
    monkeypatch.setenv("HEADWATER_LOCAL_STORAGE_PATH", str(storage))
    pipeline, calls = make_flow()
    old = os.umask(umask)
    try:
        with Session() as session:
            assert pipeline() == ("Completed", {"value": 1})
            path = result_file(session)
            assert pipeline() == ("Cached", {"value": 1})
    finally:
        os.umask(old)
    for directory in (tmp_path / "data", tmp_path / "data" / "headwater", storage):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
