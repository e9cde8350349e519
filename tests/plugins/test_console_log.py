"""The console_log plugin's formatter: run labels and tracebacks without headwater's
own frames."""

from __future__ import annotations

import os

import headwater
from headwater import flow, task

CORE = os.path.dirname(os.path.abspath(headwater.__file__)) + os.sep


def test_a_failing_callback_is_logged_with_the_callbacks_frames_only(capsys):
    """An on_failure callback that raises is logged with a traceback that shows the
    callback's own line and none of headwater's frames that called it."""

    def alert(tsk, run, state):
        raise RuntimeError("pager is down")

    @task(on_failure=[alert])
    def fails():
        raise ValueError("bad input")

    @flow
    def guarded():
        fails(return_state=True)
        return 1

    guarded()
    err = capsys.readouterr().err
    assert "State callback 'alert' raised RuntimeError: pager is down" in err
    assert 'in alert\n    raise RuntimeError("pager is down")' in err
    assert CORE not in err
