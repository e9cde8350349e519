"""Opening the run store: a file that is not headwater's, or of a newer headwater, is
left exactly as it was (no journal-mode change, no table added), and a store the user
cannot write is reported before a flow's body runs, in one line."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from headwater import flow
from headwater.errors import StoreError
from headwater.plugins.sqlite_store import SQLiteRunStore

from .procs import child_env


def _snapshot(path: Path) -> tuple[bytes, list[str]]:
    """The file's bytes, and which files sit next to it (-wal, -shm, -journal)."""
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def _database(path: Path, *statements: str) -> None:
    """An SQLite database made by plain sqlite3, as another program would (rollback journal)."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _foreign(path: Path) -> None:
    _database(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
              "INSERT INTO notes (body) VALUES ('keep me')")


def _newer(path: Path) -> None:
    _database(path, "CREATE TABLE flow_runs (id TEXT PRIMARY KEY, future_column TEXT)", "PRAGMA user_version = 99")


def _version_one_of_another_program(path: Path) -> None:
    _database(path, "CREATE TABLE settings (key TEXT, value TEXT)", "PRAGMA user_version = 1")


@pytest.mark.parametrize("make, expected", [
    (_foreign, r"not a headwater run store \(an SQLite database with other tables: notes\)"),
    (_version_one_of_another_program, r"not a headwater run store .*settings"),
    (_newer, r"written by a newer headwater \(schema 99"),
], ids=["other-tables", "version-1-other-tables", "newer-schema"])
def test_a_database_that_is_not_ours_is_left_untouched(tmp_path, make, expected):
    path = tmp_path / "headwater.db"
    make(path)
    before = _snapshot(path)
    assert _journal_mode(path) == "delete"
    with pytest.raises(StoreError, match=expected) as info:
        SQLiteRunStore(path)
    assert "\n" not in str(info.value) and "left untouched" in str(info.value)
    assert _snapshot(path) == before  # same bytes, no -wal or -shm left behind
    assert _journal_mode(path) == "delete"


def test_a_flow_refuses_a_foreign_store_before_its_body_runs(headwater_home):
    headwater_home.mkdir(parents=True)
    path = headwater_home / "headwater.db"
    _foreign(path)
    before = _snapshot(path)
    ran = []

    @flow
    def careful() -> None:
        ran.append(True)

    with pytest.raises(StoreError, match="not a headwater run store"):
        careful()
    assert ran == [] and _snapshot(path) == before


def test_an_empty_file_becomes_a_store(tmp_path):
    """A zero-byte file (what ``touch`` makes) is no other program's: it becomes the store."""
    path = tmp_path / "headwater.db"
    path.touch()
    SQLiteRunStore(path).close()
    assert _journal_mode(path) == "wal"


READ_ONLY = textwrap.dedent('''
    import os, pwd, sys
    home, warm, drop = sys.argv[1], sys.argv[2], sys.argv[3] == "drop"
    os.environ["HEADWATER_HOME"] = warm
    from headwater import Session, flow

    @flow
    def report():
        print("BODY RAN", flush=True)

    # Every module a flow run needs is imported first: the interpreter's own files may
    # not be readable by the user we become.
    with Session():
        report()
    if drop:
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    os.environ["HEADWATER_HOME"] = home
    with Session():
        report()  # creates the store
    print("CREATED", flush=True)
    os.chmod(os.path.join(home, "headwater.db"), 0o444)
    with Session():
        report()
''')


def test_a_read_only_store_is_reported_before_the_body_runs(tmp_path):
    """As a user who cannot write ``headwater.db`` (root writes anything: the check runs
    in a child that becomes ``nobody``): the flow call fails before its body with one
    line naming the file and the fix."""
    drop = os.getuid() == 0
    if drop:
        try:
            import pwd

            nobody = pwd.getpwnam("nobody")
        except (ImportError, KeyError):
            pytest.skip("running as root and there is no 'nobody' user to become")
    # Not under tmp_path: pytest's base temporary folder is private to root.
    base = Path(tempfile.mkdtemp(prefix="headwater-ro-"))
    try:
        os.chmod(base, 0o755)
        home = base / "home"
        home.mkdir()
        if drop:
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
        # The child chooses its HEADWATER_HOME itself (first the warm one, then ``home``).
        env = child_env(tmp_path / "warm", HEADWATER_LOGGING_LEVEL="WARNING")
        out = subprocess.run([sys.executable, "-c", READ_ONLY, str(home), str(tmp_path / "warm"),
                              "drop" if drop else "stay"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        # Ran while warming up and when creating the store, never on the read-only one.
        assert out.stdout.split() == ["BODY", "RAN", "BODY", "RAN", "CREATED"], out.stderr
        last = out.stderr.strip().splitlines()[-1]
        db = home / "headwater.db"
        assert last.startswith("headwater.errors.StoreError: ") and f"{db} is read-only" in last
        assert f"chmod u+w {db}" in last
    finally:
        shutil.rmtree(base, ignore_errors=True)
