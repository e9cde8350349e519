"""The tests' own PostgreSQL server (``pg_server.py``) and its fixtures (``conftest.py``):
a real server on loopback, a fresh empty database for every test, nothing left behind."""

from __future__ import annotations

import glob
import os

import psycopg
import pytest
import pg_server
from pg_server import USER, PostgresServer, find_bindir

#: Database names seen by the tests below, to show that no two tests share one.
SEEN: set[str] = set()


def test_psycopg_connects_to_the_server_on_loopback(postgres_url, postgres_server):
    assert postgres_url.startswith(f"postgresql://{USER}@127.0.0.1:{postgres_server.port}/")
    with psycopg.connect(postgres_url) as conn:
        name, user, address, version = conn.execute(
            "SELECT current_database(), current_user, inet_server_addr()::text, "
            "current_setting('server_version_num')::int").fetchone()
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
    assert postgres_url.endswith(f"/{name}") and user == USER
    assert address == "127.0.0.1/32" and version >= 100000
    with psycopg.connect(postgres_url) as other:  # committed: a second connection sees it
        assert other.execute("SELECT sum(x) FROM t").fetchone() == (3,)


@pytest.mark.parametrize("turn", [1, 2])
def test_every_test_gets_a_database_of_its_own_and_empty(postgres_url, turn):
    """Whichever runs second finds neither the first's database name nor its table."""
    with psycopg.connect(postgres_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        tables = conn.execute("SELECT table_name FROM information_schema.tables "
                              "WHERE table_schema = 'public'").fetchall()
        conn.execute("CREATE TABLE left_by_a_test (x int)")
    assert tables == []
    assert name not in SEEN
    SEEN.add(name)


def test_binaries_that_exist_are_found():
    """The fixture skips only when no server binaries can be found: wherever Debian's
    package put them, they are found."""
    installed = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{p}/postgres", os.X_OK)]
    if not installed:
        pytest.skip("no PostgreSQL under /usr/lib/postgresql on this machine")
    assert find_bindir() is not None


def fake_bindir(root, version: str, names=("postgres", "initdb")):
    bindir = root / "postgresql" / version / "bin"
    bindir.mkdir(parents=True)
    for name in names:
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


def test_the_newest_debian_version_is_taken_and_none_found_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no postgres, no pg_config
    monkeypatch.setattr(pg_server, "DEBIAN_BINDIRS", str(tmp_path / "postgresql" / "*" / "bin"))
    assert find_bindir() is None
    fake_bindir(tmp_path, "9.6")
    newest = fake_bindir(tmp_path, "16")
    fake_bindir(tmp_path, "15")
    fake_bindir(tmp_path, "17", names=("initdb",))  # a client-only install: no server
    assert find_bindir() == newest


def test_stop_shuts_the_server_down_and_removes_its_directory(postgres_server):
    """A second server beside the session's: once stopped, its port refuses connections,
    its processes are gone and its directory is removed."""
    server = PostgresServer(postgres_server.bindir).start()
    url, base = server.create_database(), server.base
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        postmaster = server.process
    server.stop()
    assert postmaster.poll() == 0  # shut down, not killed
    assert not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_a_connection_left_open_does_not_hold_up_stop(postgres_server):
    """Fast shutdown: the server ends the sessions of clients still connected."""
    server = PostgresServer(postgres_server.bindir).start()
    conn = psycopg.connect(server.create_database())
    try:
        postmaster = server.process
        server.stop(timeout=20)
        assert postmaster.returncode == 0  # shut down, not killed
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
