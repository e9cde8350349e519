"""The run history is private by default: HEADWATER_HOME is created 0700 and the store's
files (the database, its -wal and -shm) 0600 whatever the umask; an existing home that
other users can read is warned about, once, with the fix."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headwater import Session, flow

from .procs import child_env

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")

CHILD = textwrap.dedent('''
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from headwater import flow, get_store

    @flow
    def noted(token: str) -> str:
        return token

    noted("api_token=secret")
    get_store().flush()
    home = os.environ["HEADWATER_HOME"]
    for name in ("", "headwater.db", "headwater.db-wal", "headwater.db-shm"):
        path = os.path.join(home, name)
        if os.path.exists(path):  # the -wal and -shm files exist while the store is open
            print(name or "home", oct(os.stat(path).st_mode & 0o777))
''')


@pytest.mark.parametrize("umask", ["000", "022", "002"])
def test_a_new_home_and_store_are_private_whatever_the_umask(tmp_path, umask):
    home = tmp_path / "nested" / "home"
    env = child_env(home, HEADWATER_LOGGING_LEVEL="WARNING")
    out = subprocess.run([sys.executable, "-c", CHILD, umask], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    modes = dict(line.split() for line in out.stdout.splitlines())
    assert modes == {"home": "0o700", "headwater.db": "0o600", "headwater.db-wal": "0o600",
                     "headwater.db-shm": "0o600"}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def store_warnings():
    handler = _Lines()
    logger = logging.getLogger("headwater.store")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@flow
def hello() -> str:
    return "hi"


def _open_twice(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_HOME", str(home))
    for _ in range(2):
        with Session():
            hello()


def test_an_existing_home_others_can_read_is_warned_about_once(tmp_path, monkeypatch, store_warnings):
    home = tmp_path / "shared-home"
    home.mkdir()
    home.chmod(0o755)
    _open_twice(home, monkeypatch)
    assert len(store_warnings) == 1, store_warnings
    (line,) = store_warnings
    assert "\n" not in line and str(home) in line and f"chmod 700 {home}" in line
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # the user's own directory is not changed


def test_a_private_home_is_not_warned_about(tmp_path, monkeypatch, store_warnings):
    home = tmp_path / "own-home"
    home.mkdir()
    home.chmod(0o700)
    _open_twice(home, monkeypatch)
    assert store_warnings == []


@pytest.mark.parametrize("via", ["HEADWATER_HOME", "HEADWATER_DATABASE_URL"])
def test_missing_parents_of_the_store_are_created_private_too(tmp_path, via):
    """Under umask 000, every directory headwater creates on the way to the store is
    0700, not only the last one."""
    top = tmp_path / "made"
    if via == "HEADWATER_HOME":
        home = top / "deeper" / "home"
        env = child_env(home, HEADWATER_LOGGING_LEVEL="WARNING")
        made = [top, top / "deeper", home]
    else:
        store = top / "a" / "b" / "runs.db"
        env = child_env(tmp_path / "home", HEADWATER_LOGGING_LEVEL="WARNING",
                        HEADWATER_DATABASE_URL=f"sqlite:///{store}")
        made = [top, top / "a", top / "a" / "b"]
    out = subprocess.run([sys.executable, "-c", CHILD, "000"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert {str(d.relative_to(tmp_path)): oct(stat.S_IMODE(d.stat().st_mode)) for d in made} == {
        str(d.relative_to(tmp_path)): "0o700" for d in made}


def test_a_home_others_can_write_is_warned_about_as_a_place_to_plant_history(tmp_path, monkeypatch,
                                                                             store_warnings):
    home = tmp_path / "open-home"
    home.mkdir()
    home.chmod(0o777)
    _open_twice(home, monkeypatch)
    assert len(store_warnings) == 1, store_warnings
    (line,) = store_warnings
    assert str(home) in line and "can be written by other users (mode 777)" in line
    assert "plant" in line and f"chmod 700 {home}" in line
    assert stat.S_IMODE(home.stat().st_mode) == 0o777  # warned about, not changed


def test_an_existing_store_file_others_can_read_is_warned_about_once(tmp_path, monkeypatch, store_warnings):
    home = tmp_path / "home"
    _open_twice(home, monkeypatch)  # a new home and store: private, nothing to say
    assert store_warnings == []
    db = home / "headwater.db"
    db.chmod(0o644)  # an older or copied file
    _open_twice(home, monkeypatch)
    assert store_warnings == []  # in a 0700 home no one else can reach it: nothing to say
    home.chmod(0o711)  # others may open it now, by its name
    _open_twice(home, monkeypatch)
    lines = [line for line in store_warnings if "(the run store)" in line]
    assert len(lines) == 1, store_warnings
    (line,) = lines
    assert "\n" not in line and f"{db} (the run store) can be read by other users (mode 644)" in line
    assert f"chmod 600 {db}" in line
    assert stat.S_IMODE(db.stat().st_mode) == 0o644


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_home_and_store_of_another_user_are_warned_about_with_chown(tmp_path, monkeypatch, store_warnings):
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    me = pwd.getpwuid(os.geteuid()).pw_name
    home = tmp_path / "their-home"
    _open_twice(home, monkeypatch)
    db = home / "headwater.db"
    home.chmod(0o777)
    db.chmod(0o666)
    for path in (home, db):
        os.chown(path, nobody, -1)
    store_warnings.clear()
    _open_twice(home, monkeypatch)
    assert len(store_warnings) == 2, store_warnings
    home_line, db_line = store_warnings
    for line, path, mode in ((home_line, home, "700"), (db_line, db, "600")):
        assert line.startswith(str(path)) and f"belongs to nobody (uid {nobody}), not to you ({me})" in line
        assert "can be written by other users" in line and "plant or change the run history" in line
        assert f"chown {me} {path} && chmod {mode} {path}" in line
    assert (home.stat().st_uid, db.stat().st_uid) == (nobody, nobody)
