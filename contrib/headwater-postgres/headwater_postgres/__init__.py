"""headwater-postgres: headwater's run store on PostgreSQL, for many machines sharing one
history and one cache index (``HEADWATER_DATABASE_URL=postgresql://...``).

:class:`PostgresRunStore` is the store; the plugin (``headwater_postgres.plugin``) serves
the URL scheme; ``headwater_postgres.schema`` holds the tables and their migrations.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PostgresRunStore"]


def __getattr__(name: str) -> Any:
    if name == "PostgresRunStore":
        from .store import PostgresRunStore  # import time: psycopg, only when asked for

        return PostgresRunStore
    raise AttributeError(f"module 'headwater_postgres' has no attribute {name!r}")
