"""The exceptions at the path Prefect code imports them from (``prefect.exceptions``):
the same classes as :mod:`headwater.errors` and :mod:`headwater.context`."""

from __future__ import annotations

from .context import MissingContextError
from .errors import (CancelledRun, ConfigurationError, CrashedRun, FailedRun, HeadwaterError, ParameterError,
                     RunFailed, TaskTimeout, UpstreamFailed)

__all__ = ["CancelledRun", "ConfigurationError", "CrashedRun", "FailedRun", "HeadwaterError", "MissingContextError",
           "ParameterError", "RunFailed", "TaskTimeout", "UpstreamFailed"]
