"""The headwater plugin: serves ``postgresql://`` (and ``postgres://``) database URLs with
:class:`~headwater_postgres.store.PostgresRunStore`.

Loaded by headwater through the ``headwater.plugins`` entry point. It imports neither
psycopg nor the store until a session opens a PostgreSQL store, so ``import headwater``
stays as quick with the package installed.
"""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl

SCHEMES = ("postgresql", "postgres")


def make_postgres_store(url: str, session: Any) -> Any:
    """The run store at ``url`` (a registry ``run_store`` factory)."""
    from headwater_postgres.store import PostgresRunStore  # import time: psycopg, when used

    return PostgresRunStore(url, heartbeat_seconds=session.settings.heartbeat_seconds)


@hookimpl
def headwater_register_components(registry: Any) -> None:
    for scheme in SCHEMES:
        registry.add_run_store(scheme, make_postgres_store, source="headwater-postgres")
