"""pytest plugin for testing your flows without touching your real run history.

Installed with headwater (entry point ``pytest11``). Use the fixture::

    def test_my_flow(headwater_session):
        assert my_flow(2) == 4
        runs = headwater_session.store.read_flow_runs()
        assert runs[0].state.is_completed()

Each test gets its own :class:`~headwater.Session` with ``HEADWATER_HOME`` in a
temporary directory, so runs, cache entries and results vanish with the test.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest


@pytest.fixture
def headwater_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A temporary ``HEADWATER_HOME`` (set in the environment for the test)."""
    home = tmp_path / "headwater-home"
    monkeypatch.setenv("HEADWATER_HOME", str(home))
    for key in ("HEADWATER_DATABASE_URL", "HEADWATER_LOCAL_STORAGE_PATH"):
        monkeypatch.delenv(key, raising=False)
    return home


@pytest.fixture
def headwater_session(headwater_home: Any) -> Iterator[Any]:
    """An isolated, active headwater Session over a temporary ``HEADWATER_HOME``."""
    from headwater.session import Session

    with Session() as session:
        yield session
