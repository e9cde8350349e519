"""Fixtures of the contrib tests: a real PostgreSQL server on loopback for the session,
and a fresh empty database on it for each test that asks (``postgres_url``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import PostgresServer, find_bindir  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server started for this test session (``tests/contrib/pg_server.py``),
    stopped at its end. Skips only when this machine has no server binaries."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (postgres and initdb) on PATH, in `pg_config --bindir` "
                    "or in /usr/lib/postgresql/*/bin: apt-get install postgresql (.ci/run does)")
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """``postgresql://headwater@127.0.0.1:<port>/<db>``: a database made for this test
    alone (CREATE DATABASE), empty."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
