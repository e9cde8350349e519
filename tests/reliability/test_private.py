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
