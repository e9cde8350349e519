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
    pass


class PluginError(ConfigurationError):
    pass


class UnknownComponentError(ConfigurationError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(HeadwaterError):
    pass


class ParameterError(HeadwaterError, TypeError):
    pass


class RunNameError(HeadwaterError):
    pass


class RunFailed(HeadwaterError):
    pass


class UpstreamFailed(HeadwaterError):
    pass


class TaskTimeout(HeadwaterError, TimeoutError):
    pass


class TaskNestingError(HeadwaterError, RecursionError):
    pass
