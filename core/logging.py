"""``headwater.logging``: the run logger at the path Prefect code imports it from.

``get_run_logger()`` is the logger of the active task run or flow run (outside a run, a
plain logger under ``headwater``); ``disable_run_logger()`` makes it drop every record
inside a block, for calling ``my_task.fn()`` directly.
"""

from __future__ import annotations

from .run_logging import disable_run_logger, get_run_logger

__all__ = ["disable_run_logger", "get_run_logger"]
