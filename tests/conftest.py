"""Every test runs in its own Session over a temporary HEADWATER_HOME (the project's
own pytest plugin, ``headwater.testing``, provides the fixtures)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_headwater(headwater_session):
    """Isolate every test: its own session, store, results and settings."""
    yield headwater_session
