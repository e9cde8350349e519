"""pytest plugin for testing your flows without touching your real run history.

Installed with headwater (entry point ``pytest11``). Use the fixture::

    def test_my_flow(headwater_session):
        assert my_flow(2) == 4
        runs = headwater_session.store.read_flow_runs()
        assert runs[0].state.is_completed()

Each test gets its own :class:`~headwater.Session` with ``HEADWATER_HOME`` in a
temporary directory, so runs, cache entries and results vanish with the test. Inside
``headwater_session``, headwater's log records also reach pytest's ``caplog``.

For task runner authors, :class:`RunnerConformance` is the conformance suite every
runner passes: subclass it in a test module and give your runner as the ``task_runner``
fixture (docs/task-runners.md, "Testing a task runner"). :class:`ResultStoreConformance`
and :class:`RunStoreConformance` do the same for result stores and run stores
(docs/plugins.md, "Testing a result store" and "Testing a run store").
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, Iterator

import pytest

__all__ = ["ResultStoreConformance", "RunStoreConformance", "RunnerConformance", "headwater_home",
           "headwater_session"]

# The suite's own asserts explain their failures, as a test module's do.
pytest.register_assert_rewrite("headwater.testing_runners")
pytest.register_assert_rewrite("headwater.testing_results")
pytest.register_assert_rewrite("headwater.testing_stores")
pytest.register_assert_rewrite("headwater.testing_store_sharing")


#: The conformance suites, each loaded from its module on first use (``__getattr__``).
_SUITES = {
    "RunnerConformance": "headwater.testing_runners",
    "ResultStoreConformance": "headwater.testing_results",
    "RunStoreConformance": "headwater.testing_stores",
}

if TYPE_CHECKING:
    from .testing_results import ResultStoreConformance
    from .testing_runners import RunnerConformance
    from .testing_stores import RunStoreConformance


def __getattr__(name: str) -> Any:
    # The conformance suites define flows and tasks and import the session: loaded only by
    # the tests that use them, so a plain pytest run of a project pays nothing for them.
    module = _SUITES.get(name)
    if module is None:
        raise AttributeError(f"module 'headwater.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


@pytest.fixture
def headwater_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A temporary ``HEADWATER_HOME`` (set in the environment for the test)."""
    home = tmp_path / "headwater-home"
    monkeypatch.setenv("HEADWATER_HOME", str(home))
    for key in ("HEADWATER_DATABASE_URL", "HEADWATER_LOCAL_STORAGE_PATH", "HEADWATER_RESULT_STORAGE"):
        monkeypatch.delenv(key, raising=False)
    return home


class _ToCaplog(logging.Handler):
    """Hands headwater's records to pytest's ``caplog`` handler.

    The console_log plugin stops the ``headwater`` logger from propagating (so lines are
    not printed twice by a root handler), which also keeps records from the handler
    pytest puts on the root logger. This handler, on the ``headwater`` logger only while
    a test uses ``headwater_session``, delivers them to ``caplog`` alone: nothing more is
    printed, and outside tests nothing changes.
    """

    def __init__(self, logging_plugin: Any) -> None:
        super().__init__()
        self._plugin = logging_plugin
        self._logger = logging.getLogger("headwater")

    def emit(self, record: logging.LogRecord) -> None:
        if self._logger.propagate:
            return  # the record reaches the root logger, and caplog there, by itself
        target = getattr(self._plugin, "caplog_handler", None)
        if target is not None and record.levelno >= target.level:
            target.handle(record)


@pytest.fixture
def headwater_session(headwater_home: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An isolated, active headwater Session over a temporary ``HEADWATER_HOME``.

    While it is active, headwater's log records are visible to pytest's ``caplog``.
    """
    # Every pytest run imports this plugin; only tests using the fixture need a session.
    # import time: the session and the plugin system under it take about 15 ms
    from headwater.session import Session

    logging_plugin = request.config.pluginmanager.get_plugin("logging-plugin")
    forward = _ToCaplog(logging_plugin) if logging_plugin is not None else None
    logger = logging.getLogger("headwater")
    if forward is not None:
        logger.addHandler(forward)
    try:
        with Session() as session:
            yield session
    finally:
        if forward is not None:
            logger.removeHandler(forward)
