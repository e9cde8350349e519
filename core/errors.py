"""Exceptions headwater raises itself.

::

    HeadwaterError
    ├── ConfigurationError        bad settings, options or plugin configuration
    │   ├── PluginError           a plugin failed to load or declares an unknown hook
    │   └── UnknownComponentError a name (runner, store, serializer) nobody registered
    ├── StoreError                the run store or result storage cannot be used
    ├── ParameterError            a flow's parameters do not bind or validate (a TypeError too)
    ├── RunNameError              a run-name template or callable failed
    ├── RunFailed                 a run failed without an exception of its own
    ├── UpstreamFailed            a task did not run because a task it waits for failed
    ├── TaskTimeout               a run exceeded timeout_seconds (a TimeoutError too)
    └── TaskNestingError          task runs nested deeper than the limit (a RecursionError too)
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Base of every error headwater raises itself."""


class ConfigurationError(HeadwaterError, ValueError):
    """Bad settings, options or plugin configuration; the message names the value and what was expected."""


class PluginError(ConfigurationError):
    """A plugin failed to load, or declares a hook that does not exist."""


class UnknownComponentError(ConfigurationError, KeyError):
    """A name (task runner, store, serializer, cache policy) that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(HeadwaterError):
    """The run store or result storage cannot be used (closed, missing, unreadable)."""


class ParameterError(HeadwaterError, TypeError):
    """A flow's parameters do not bind to its signature or do not validate."""


class RunNameError(HeadwaterError):
    """A run-name template or callable failed."""


class RunFailed(HeadwaterError):
    """A run failed without an exception of its own to raise."""


class FailedRun(RunFailed):
    """``state.result()`` of a Failed state that holds no exception (Prefect's name)."""


class CrashedRun(RunFailed):
    """``state.result()`` of a Crashed state that holds no exception (Prefect's name)."""


class CancelledRun(RunFailed):
    """``state.result()`` of a Cancelled state that holds no exception (Prefect's name)."""


class UpstreamFailed(HeadwaterError):
    """A task did not run because a task it waits for failed."""


class TaskTimeout(HeadwaterError, TimeoutError):
    """A run exceeded its ``timeout_seconds``."""


class TaskNestingError(HeadwaterError, RecursionError):
    """Task runs nested deeper than the limit (a task calling itself without end)."""


class RetryError(HeadwaterError):
    """A flow run that cannot be retried (``headwater.retry_run``): unknown, still
    running, completed (without ``force``), or its flow or parameters cannot be had
    again. The message says which; nothing was run."""
