"""``headwater cache prune [--dry-run] [--json]``: delete expired cache entries, and the
result files in ``HEADWATER_LOCAL_STORAGE_PATH`` that nothing refers to any more.

A result file is referenced by a cache entry, by a task run (``result_location``: what
``headwater runs retry`` reuses) or by a flow run (its persisted parameters and result):
such a file is never deleted, whatever happened to the entry that wrote it. A file no one
refers to is deleted only once it is an hour old, since a running flow writes a result a
moment before it records the run that refers to it. Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater.settings import storage_scheme
from headwater.stores import CacheIndex, RunReader, require_part

from .cli_format import current_session
from .local_results import configured_result_store

#: The names the local result store gives its files (a SHA-256 of the result's key).
RESULT_FILE = re.compile(r"[0-9a-f]{64}")

#: Seconds a result file no one refers to is kept after it was written: a running flow
#: writes a result before the run or entry referring to it is recorded.
GRACE_SECONDS = 3600.0


@dataclass
class ResultFile:
    """A result file of the local result store: its name (the location runs and entries
    record), size in bytes and when it was last written (epoch seconds)."""

    name: str
    size: int
    mtime: float


def result_files(directory: Path) -> list[ResultFile]:
    """Every result file in ``directory`` (temporary files of writes in progress, and
    anything not named as a result, are left out)."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no results written yet
        return []
    for entry in entries:
        if RESULT_FILE.fullmatch(entry.name) is None:
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out.append(ResultFile(entry.name, st.st_size, st.st_mtime))
        except OSError:  # gone meanwhile
            continue
    return out


def cmd_cache_prune(args: argparse.Namespace) -> int:
    session = current_session()
    store = require_part(session.store, CacheIndex, "`headwater cache prune`")
    require_part(store, RunReader, "`headwater cache prune` (it keeps the result files runs refer to)")
    now = time.time()
    expired = [e for e in store.read_cache_entries() if e.is_expired(now)]
    if not args.dry_run:
        expired = store.delete_cache_entries(expired_only=True)
    gone = {e.key for e in expired}
    # Read after the entries are deleted: an entry written meanwhile keeps its file.
    referenced = {e.location for e in store.read_cache_entries() if e.key not in gone}
    referenced |= store.read_result_locations()
    freed = {e.location for e in expired}  # their files may go at once: an entry wrote them
    storage = session.settings.result_storage
    if storage_scheme(storage):
        return _prune_at_url(args, session, storage, expired, sorted(freed - referenced))
    directory = Path(storage).expanduser() if storage else Path(session.settings.local_storage_path)
    doomed = [f for f in result_files(directory)
              if f.name not in referenced and (f.name in freed or f.mtime < now - GRACE_SECONDS)]
    removed = []
    for f in doomed:
        if args.dry_run:
            removed.append(f)
            continue
        try:
            os.unlink(directory / f.name)
            removed.append(f)
        except FileNotFoundError:
            continue
        except OSError as exc:
            print(f"headwater: warning: cannot delete {directory / f.name}: {exc.strerror or exc}", file=sys.stderr)
    size = sum(f.size for f in removed)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "expired_entries": [e.key for e in expired],
                          "result_files": [f.name for f in removed], "bytes": size,
                          "directory": str(directory)}, indent=2))
        return 0
    verb = "Would remove" if args.dry_run else "Removed"
    print(f"{verb} {_count(len(expired), 'expired cache entry', 'expired cache entries')} and "
          f"{_count(len(removed), 'result file', 'result files')} ({_megabytes(size)}) that no cache entry, "
          f"task run or flow run refers to, in {directory}.")
    return 0


def _prune_at_url(args: argparse.Namespace, session: Any, url: str, expired: list[Any],
                  doomed: list[str]) -> int:
    """Prune with results at a URL (``HEADWATER_RESULT_STORAGE``): the results of the
    expired entries go through the result store; results nothing refers to are not
    looked for, as a store at a URL need not be able to list what it holds."""
    if not args.dry_run and doomed:
        result_store = configured_result_store(session)
        for location in doomed:
            result_store.delete(location)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "expired_entries": [e.key for e in expired],
                          "result_files": doomed, "bytes": None, "storage": url}, indent=2))
        return 0
    verb = "Would remove" if args.dry_run else "Removed"
    print(f"{verb} {_count(len(expired), 'expired cache entry', 'expired cache entries')} and "
          f"{_count(len(doomed), 'result', 'results')} they kept, at {url} (results at a URL "
          f"that no entry ever referred to are not looked for).")
    return 0


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"
