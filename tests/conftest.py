"""Every test runs in its own Session over a temporary HEADWATER_HOME (the project's
own pytest plugin, ``headwater.testing``, provides the fixtures)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_headwater(headwater_session, monkeypatch):
    """Isolate every test: its own session, store, results and settings; the shell's
    colour settings (FORCE_COLOR, NO_COLOR) cleared, so output is as for a pipe."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield headwater_session
