"""The PostgreSQL run store's tables, and the migrations that bring a database to them.

The tables live in their own PostgreSQL schema (``headwater`` by default; the URL's
``schema`` query parameter names another), so the database may hold other tables. Their
layout follows the SQLite store's, column for column, so that store's queries run here
(``dialect``); two columns are added for those queries: ``rowid`` on the run tables,
which SQLite has on every table.

``schema_version`` holds one row, the version of the layout. :func:`ensure_schema` runs
on first use, under a transaction-scoped advisory lock so that many processes opening
one new database at once migrate it once: it creates the tables (version 0 -> 1, and
later versions step by step, each in the same transaction), and refuses, touching
nothing, a database whose version is newer than this package knows.
"""

from __future__ import annotations

from typing import Any

from headwater.errors import StoreError

#: Migration ``n`` brings a database of version ``n`` to ``n + 1``; the version this
#: package writes is ``len(MIGRATIONS)``. Append; never edit a shipped step.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 0 -> 1: the first layout
        """CREATE TABLE flow_runs (
            rowid BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, name TEXT NOT NULL, flow_name TEXT NOT NULL,
            flow_version TEXT, parent_flow_run_id TEXT, parent_task_run_id TEXT, parameters TEXT, tags TEXT,
            state_type TEXT, state_name TEXT, state_message TEXT, start_ts DOUBLE PRECISION,
            end_ts DOUBLE PRECISION, run_count INTEGER, host TEXT, pid BIGINT, pid_start TEXT,
            created DOUBLE PRECISION, heartbeat DOUBLE PRECISION, heartbeat_every DOUBLE PRECISION,
            entry_point TEXT, inputs_hash TEXT, parameters_location TEXT, result_location TEXT)""",
        "CREATE INDEX flow_runs_created ON flow_runs (created)",
        "CREATE INDEX flow_runs_name ON flow_runs (name)",
        "CREATE INDEX flow_runs_flow ON flow_runs (flow_name, created)",
        "CREATE INDEX flow_runs_state ON flow_runs (state_type)",
        "CREATE INDEX flow_runs_parent ON flow_runs (parent_flow_run_id)",
        "CREATE INDEX flow_runs_process ON flow_runs (host, pid)",
        """CREATE TABLE task_runs (
            rowid BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, flow_run_id TEXT, name TEXT NOT NULL,
            task_name TEXT NOT NULL, task_key TEXT, parameters TEXT, tags TEXT, cache_key TEXT,
            result_location TEXT, upstream TEXT, state_type TEXT, state_name TEXT, state_message TEXT,
            start_ts DOUBLE PRECISION, end_ts DOUBLE PRECISION, run_count INTEGER, host TEXT, pid BIGINT,
            pid_start TEXT, created DOUBLE PRECISION, seq BIGINT, inputs_hash TEXT)""",
        "CREATE INDEX task_runs_flow ON task_runs (flow_run_id, created, seq)",
        "CREATE INDEX task_runs_state ON task_runs (state_type)",
        # No primary key: states are only read by run, in order (the index below); one
        # index less to update for each of the three or more states of every task run.
        """CREATE TABLE states (
            seq BIGSERIAL NOT NULL, run_id TEXT NOT NULL, run_kind TEXT NOT NULL, type TEXT NOT NULL,
            name TEXT NOT NULL, message TEXT, ts DOUBLE PRECISION NOT NULL, details TEXT)""",
        "CREATE INDEX states_run ON states (run_id, seq)",
        """CREATE TABLE cache_entries (
            key TEXT PRIMARY KEY, task_name TEXT, task_run_id TEXT, location TEXT NOT NULL, serializer TEXT,
            created DOUBLE PRECISION NOT NULL, expiration DOUBLE PRECISION, size BIGINT, digest TEXT)""",
        """CREATE TABLE logs (
            seq BIGSERIAL PRIMARY KEY, flow_run_id TEXT, task_run_id TEXT, ts DOUBLE PRECISION, level TEXT,
            logger TEXT, message TEXT)""",
        "CREATE INDEX logs_flow ON logs (flow_run_id, seq)",
        "CREATE INDEX logs_task ON logs (task_run_id, seq)",
        """CREATE TABLE flows (
            name TEXT PRIMARY KEY, description TEXT, version TEXT, tags TEXT, updated DOUBLE PRECISION)""",
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)

#: The advisory lock taken while a database is checked and migrated (any number, the
#: same in every process: "hw" in ASCII).
_LOCK = 0x6877


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier (double-quoted)."""
    return '"' + name.replace('"', '""') + '"'


def ensure_schema(conn: Any, schema: str, where: str) -> int:
    """Bring the tables in ``schema`` to :data:`SCHEMA_VERSION` (creating them in a new
    database); return the version found. ``conn`` is a psycopg connection in autocommit
    mode; ``where`` names the database in errors. A newer version is refused untouched."""
    name = quote_identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        version = 0
        if found is not None:
            # The catalog, not information_schema: that lists only tables this role may use.
            tables = {row[0] for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')", (schema,))}
            if "schema_version" in tables:
                row = conn.execute(f"SELECT version FROM {name}.schema_version").fetchone()
                version = row[0] if row else 0
            elif tables:
                shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
                raise StoreError(f"{where}: the PostgreSQL schema {schema!r} holds tables that are not "
                                 f"headwater's ({shown}); it was left untouched. Name another schema "
                                 f"(?schema=... in HEADWATER_DATABASE_URL) or another database.")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where} was written by a newer headwater-postgres (schema {version}, this one "
                             f"knows {SCHEMA_VERSION}); upgrade headwater-postgres. It was left untouched.")
        if version == SCHEMA_VERSION:
            return version
        if found is None:  # asked only then: a role may own a schema without rights on the database
            conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"SET LOCAL search_path TO {name}")
        if version == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return version
