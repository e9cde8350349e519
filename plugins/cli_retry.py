"""``headwater runs retry RUN [--force]``: run a failed flow run again from where it
failed (``headwater.retry``), print its final state (exit status 1 unless it completed).
Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import os
import sys

from .cli_text import shown


def cmd_runs_retry(args: argparse.Namespace) -> int:
    from headwater.retry import RetryError, prepare, read_entry_point, run_again

    try:
        flow, run, parameters = prepare(args.run, force=args.force)
    except RetryError as exc:
        print(f"headwater: error: {shown(str(exc))}", file=sys.stderr)
        return 1
    # Relative paths in the flow mean what they meant in its first attempt.
    where = read_entry_point(run).cwd if run.entry_point else None
    if where and not os.path.isdir(where):
        print(f"headwater: warning: {shown(where)}, where flow run {shown(repr(run.name))} first ran, no longer "
              f"exists: running in {shown(os.getcwd())} (relative paths in the flow now mean paths here)",
              file=sys.stderr)
    elif where and not _same_dir(where, os.getcwd()):
        os.chdir(where)
        print(f"Running in {shown(where)}, where flow run {shown(repr(run.name))} first ran", file=sys.stderr)
    try:
        state = run_again(flow, run, parameters)
    except RetryError as exc:
        print(f"headwater: error: {shown(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"headwater: interrupted: flow run {shown(repr(run.name))} ended Crashed; "
              f"`headwater runs retry {run.id[:8]}` goes on from there", file=sys.stderr)
        return 130
    print(shown(repr(state)))
    return 0 if state.is_completed() else 1


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
