"""The run-store conformance suite (``headwater.testing.RunStoreConformance``) on the
PostgreSQL store, against the tests' own server: every test gets a new PostgreSQL schema
of one database (``?schema=``), as the SQLite store's gets a new file."""

from __future__ import annotations

import itertools

import pytest

from headwater.testing import RunStoreConformance

pytest.importorskip("headwater_postgres")
from headwater_postgres.store import PostgresRunStore  # noqa: E402

#: The heartbeat of the child processes and of the test's own handles: a run whose
#: process is gone reads Crashed six of these after its last one.
HEARTBEAT = 0.5
_schemas = itertools.count()


@pytest.fixture(scope="module")
def conformance_database(postgres_server):
    url = postgres_server.create_database("conformance")
    yield url


class TestPostgresRunStore(RunStoreConformance):
    crash_env = {"HEADWATER_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    crash_seconds = 6 * HEARTBEAT + 2.0

    @pytest.fixture(autouse=True)
    def _database(self, conformance_database):
        self.database = conformance_database

    def make_store(self, tmp_path):
        self.url = f"{self.database}?schema=conformance_{next(_schemas)}"
        return PostgresRunStore(self.url, heartbeat_seconds=HEARTBEAT)

    def open_again(self, store, tmp_path):
        return PostgresRunStore(store.url, heartbeat_seconds=HEARTBEAT)

    def store_url(self, store):
        return store.url

    def text_read_back(self, text):
        # PostgreSQL's text holds no NUL: names and messages keep it as the four
        # characters \x00 (parameters, which are JSON, keep it exactly).
        return super().text_read_back(text) | {t.replace("\x00", "\\x00") for t in super().text_read_back(text)}
