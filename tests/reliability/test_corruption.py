"""Every kind of damaged file: a clear error or a recompute with a warning, never a deep
traceback, never a wrong result, and the run store never overwritten.

The damage is done to a copy of a store made once by real flow runs, then a fresh
process runs a flow and another runs ``headwater runs``, as a user would next.

* The run store (``headwater.db``) truncated at three places, replaced by other bytes,
  or whole pages of garbage behind a valid header: the flow call raises a headwater
  error naming the file before its body runs, ``headwater runs`` prints one
  ``headwater: error:`` line naming it, and the file keeps every byte.
* Garbage appended to it, or in place of its ``-wal`` or ``-shm`` file, or a zero-byte
  file: SQLite needs none of those bytes, so the flow runs and every earlier run is
  still listed.
* A cached result file truncated, empty, garbage (with or without a valid header),
  missing, a directory, or another valid result; a cache entry pointing at no file or
  outside the storage folder: the task runs again, one warning says why, the value is
  the task's, and the next call is a cache hit again.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from .procs import child_env

FLOW = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from headwater import flow, task
    from headwater.errors import HeadwaterError

    marks = Path(sys.argv[2])


    def by_n(context, parameters):
        return f"compute-{parameters['n']}"


    @task(cache_key_fn=by_n)
    def compute(n):
        (marks / f"computed-{n}-{time.time_ns()}").touch()
        return {"n": n, "square": n * n}


    @flow(flow_run_name="{tag}")
    def job(tag, ns):
        (marks / f"body-{tag}").touch()
        states = [compute(n, return_state=True) for n in ns]
        return [[s.name, s.result()] for s in states]


    try:
        out = {"results": job(sys.argv[1], [int(n) for n in sys.argv[3:]])}
    except Exception as exc:
        out = {"error": type(exc).__name__, "headwater": isinstance(exc, HeadwaterError), "message": str(exc)}
    print(json.dumps(out))
    """
)


def run_flow(home: Path, script: Path, marks: Path, tag: str, *ns: int) -> tuple[dict, str]:
    marks.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(script), tag, str(marks), *map(str, ns)],
                          env=child_env(home), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def headwater_runs(home: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("headwater")
    return subprocess.run([str(cli), "runs", "--json"], env=child_env(home), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store with three recorded flow runs and two cached results (7 and 8), made once."""
    root = tmp_path_factory.mktemp("template")
    script = root / "job.py"
    script.write_text(FLOW)
    home = root / "home"
    for tag in ("first", "second", "third"):
        out, _ = run_flow(home, script, root / "marks", tag, 7, 8)
        assert "results" in out, out
    assert not list(home.glob("headwater.db-wal"))  # the last process checkpointed on exit
    return home, script


def fresh_copy(template: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    home, script = template
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return copy, script, tmp_path / "marks"


# -- the run store -----------------------------------------------------------------------------


def truncate_to(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        os.truncate(db, size(db.stat().st_size))
    return damage


def replace_with(data: bytes) -> Callable[[Path], None]:
    return lambda db: db.write_bytes(data)


def garbage_pages(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:100] + os.urandom(db.stat().st_size - 100))


def append_garbage(db: Path) -> None:
    with open(db, "ab") as handle:
        handle.write(os.urandom(8192))


def sidecar(suffix: str, size: int) -> Callable[[Path], None]:
    return lambda db: Path(f"{db}{suffix}").write_bytes(os.urandom(size))


UNUSABLE = {
    "truncated-to-one-page": truncate_to(lambda n: 4096),
    "truncated-to-half": truncate_to(lambda n: n // 2),
    "truncated-by-one-page": truncate_to(lambda n: n - 4096),
    "truncated-in-the-header": truncate_to(lambda n: 50),
    "replaced-by-text": replace_with(b"this is not a database\n" * 100),
    "replaced-by-random-bytes": replace_with(os.urandom(65536)),
    "valid-header-garbage-pages": garbage_pages,
}

USABLE = {
    # name: (damage, earlier runs still listed)
    "garbage-appended": (append_garbage, True),
    "wal-file-garbage": (sidecar("-wal", 16384), True),
    "shm-file-garbage": (sidecar("-shm", 32768), True),
    "zero-bytes": (replace_with(b""), False),
}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_an_unusable_run_store_is_a_clear_error_before_the_body_and_keeps_every_byte(
        template: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    """A damaged store: one headwater error naming the file, raised before the flow body
    runs; ``headwater runs`` says the same in one line; the file is byte for byte kept."""
    home, script, marks = fresh_copy(template, tmp_path)
    db = home / "headwater.db"
    UNUSABLE[kind](db)
    before = db.read_bytes()
    out, err = run_flow(home, script, marks, "after", 7)
    assert out.get("headwater") is True, out
    assert str(db) in out["message"], out
    assert not (marks / "body-after").exists(), "the flow body ran before the store was found unusable"
    listing = headwater_runs(home)
    assert listing.returncode == 1
    assert "Traceback" not in listing.stderr
    lines = listing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headwater: error:") and str(db) in lines[0], listing.stderr
    assert db.read_bytes() == before


@pytest.mark.parametrize("kind", list(USABLE))
def test_bytes_sqlite_does_not_need_do_not_stop_the_store_or_lose_runs(
        template: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    """Garbage after the last page, a garbage -wal or -shm file, or an empty file: the
    flow runs and is recorded, and no earlier run is lost."""
    home, script, marks = fresh_copy(template, tmp_path)
    damage, kept = USABLE[kind]
    damage(home / "headwater.db")
    out, err = run_flow(home, script, marks, "after", 7)
    assert out.get("results", [[None, None]])[0][1] == {"n": 7, "square": 49}, (out, err[-2000:])
    assert "Traceback" not in err
    listing = headwater_runs(home)
    assert listing.returncode == 0, listing.stderr
    names = sorted(run["name"] for run in json.loads(listing.stdout))
    assert names == (["after", "first", "second", "third"] if kept else ["after"])


# -- result files and cache entries ---------------------------------------------------------------


def location(home: Path, key: str) -> Path:
    with sqlite3.connect(f"file:{home / 'headwater.db'}?mode=ro", uri=True) as conn:
        (loc,) = conn.execute("SELECT location FROM cache_entries WHERE key = ?", (key,)).fetchone()
    return home / "storage" / loc


def set_location(home: Path, key: str, value: str) -> None:
    with sqlite3.connect(home / "headwater.db") as conn:
        conn.execute("UPDATE cache_entries SET location = ? WHERE key = ?", (value, key))
    conn.close()


def result_damage(kind: str, home: Path) -> None:
    path = location(home, "compute-7")
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif kind == "garbage-behind-a-valid-header":
        header = 5 + data[4]  # magic, name length, serializer name
        path.write_bytes(data[:header] + os.urandom(len(data) - header))
    elif kind == "missing":
        path.unlink()
    elif kind == "a-directory":
        path.unlink()
        path.mkdir()
    elif kind == "another-valid-result":
        shutil.copyfile(location(home, "compute-8"), path)
    elif kind == "entry-pointing-at-no-file":
        set_location(home, "compute-7", "0" * 64)
    elif kind == "entry-pointing-outside-the-storage":
        set_location(home, "compute-7", "../headwater.db")
    else:  # pragma: no cover - a case without damage
        raise AssertionError(kind)


RESULT_KINDS = ["truncated", "zero-bytes", "garbage", "garbage-behind-a-valid-header", "missing", "a-directory",
                "another-valid-result", "entry-pointing-at-no-file", "entry-pointing-outside-the-storage"]


@pytest.mark.parametrize("kind", RESULT_KINDS)
def test_a_damaged_cached_result_is_computed_again_with_one_warning(
        template: tuple[Path, Path], tmp_path: Path, kind: str) -> None:
    """The cached call runs the task again (never returns another value), one warning
    says the entry could not be used, and the call after it is a cache hit again. (A
    directory in a result's place is not headwater's to delete: the new result cannot be
    written there either, which a second warning says, and the next call computes again.)"""
    heals = kind != "a-directory"
    home, script, marks = fresh_copy(template, tmp_path)
    result_damage(kind, home)
    out, err = run_flow(home, script, marks, "after", 7)
    assert out.get("results") == [["Completed", {"n": 7, "square": 49}]], (out, err[-2000:])
    assert len(list(marks.glob("computed-7-*"))) == 1  # the task really ran again
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == (1 if heals else 2), err
    assert "compute-7" in warnings[0]  # it names the cache key
    again, err = run_flow(home, script, marks, "again", 7)
    state = "Cached" if heals else "Completed"
    assert again.get("results") == [[state, {"n": 7, "square": 49}]], (again, err[-2000:])
    assert len([line for line in err.splitlines() if "WARNING" in line]) == (0 if heals else 2), err
