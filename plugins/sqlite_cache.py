"""The SQLite run store's cache index: one row per cache key, written at once (not
queued: other processes must find an entry as soon as its result is on disk), with the
digest of the result file that a hit checks before loading it.

A mixin of ``SQLiteRunStore``: it uses the store's ``_conn()`` and ``_write_txn()``.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from headwater.stores import CacheEntry

from .sqlite_values import safe_text
from .sqlite_writer import read_only

_CACHE_COLUMNS = "key, task_name, task_run_id, location, serializer, created, expiration, size, digest"


def add_cache_digest_column(conn: sqlite3.Connection) -> str:
    """Give ``cache_entries`` of a store made before entries had digests its ``digest``
    column (NULL for the old rows: not checked); return the columns to read. Added without
    a schema version bump, like ``flows``: older headwater versions still use the file."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(cache_entries)")}
    if not columns or "digest" in columns:
        return _CACHE_COLUMNS
    try:
        conn.execute("ALTER TABLE cache_entries ADD COLUMN digest TEXT")
    except sqlite3.OperationalError as exc:
        if "duplicate column" in str(exc):  # another process added it meanwhile
            return _CACHE_COLUMNS
        if read_only(exc):  # a read-only file: read without digests
            return _CACHE_COLUMNS.rsplit(",", 1)[0]
        raise
    return _CACHE_COLUMNS


#: Upsert of a whole entry, in the SQL both SQLite and PostgreSQL (headwater-postgres) take.
_REPLACE = "ON CONFLICT(key) DO UPDATE SET " + ", ".join(
    f"{c}=excluded.{c}" for c in _CACHE_COLUMNS.replace(" ", "").split(",")[1:])


def _text(value: str | None) -> str | None:
    return None if value is None else safe_text(value)


class SQLiteCacheIndex:
    """``read_cache_entry``, ``write_cache_entry``, ``read_cache_entries`` and
    ``delete_cache_entries`` of the run store interface. Keys, task names and locations
    are written as the batch writer writes text (``safe_text``) and looked up the same way."""

    _cache_columns = _CACHE_COLUMNS  # without digest for a read-only store made before it
    _conn: Callable[[], sqlite3.Connection]
    _write_txn: Callable[[Any], Any]

    def read_cache_entry(self, key: str) -> CacheEntry | None:
        row = self._conn().execute(
            f"SELECT {self._cache_columns} FROM cache_entries WHERE key = ?", (safe_text(key),)).fetchone()
        return CacheEntry(*row) if row else None

    def write_cache_entry(self, entry: CacheEntry) -> None:
        self._write_txn(lambda conn: conn.execute(
            f"INSERT INTO cache_entries ({_CACHE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?) {_REPLACE}",
            # Text as the batch writer stores it (a key made from a file name that is not
            # UTF-8 is written with its surrogates escaped, and looked up the same way).
            (safe_text(entry.key), _text(entry.task_name), _text(entry.task_run_id), safe_text(entry.location),
             _text(entry.serializer), entry.created, entry.expiration, entry.size, entry.digest)))

    def read_cache_entries(self) -> list[CacheEntry]:
        rows = self._conn().execute(
            f"SELECT {self._cache_columns} FROM cache_entries ORDER BY created").fetchall()
        return [CacheEntry(*row) for row in rows]

    def delete_cache_entries(self, *, expired_only: bool = False, task_name: str | None = None) -> list[CacheEntry]:
        task_name = _text(task_name)  # as the entries store it

        def write(conn: sqlite3.Connection) -> list[CacheEntry]:
            # Select and delete in one write transaction: an entry another process
            # refreshes meanwhile is either deleted whole or kept whole, never its
            # fresh row deleted because its stale one matched.
            # The task name is compared by the database, so it matches as it was stored
            # (headwater-postgres stores a NUL escaped, and escapes the name alike).
            where, args = ("WHERE task_name = ? ", [task_name]) if task_name is not None else ("", [])
            rows = conn.execute(
                f"SELECT {self._cache_columns} FROM cache_entries {where}ORDER BY created", args).fetchall()
            entries = [e for e in (CacheEntry(*row) for row in rows) if not expired_only or e.is_expired()]
            # Only the row as read: one another process refreshed meanwhile (a database
            # whose transactions do not lock the table, PostgreSQL) stays.
            conn.executemany("DELETE FROM cache_entries WHERE key = ? AND created = ?",
                             [(e.key, e.created) for e in entries])
            return entries

        return self._write_txn(write)
