"""`headwater cache ls` and `headwater cache clear`."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from headwater import flow, task
from headwater.cli import main
from headwater.session import Session


@task(cache_key_fn=lambda c, p: f"greet-{p['name']}", cache_expiration=dt.timedelta(minutes=5))
def greet(name: str) -> str:
    return "hello " + name


@task(cache_key_fn=lambda c, p: "short-lived", cache_expiration=dt.timedelta(seconds=0.05))
def short_lived() -> int:
    return 1


@task(cache_key_fn=lambda c, p: "forever")
def forever() -> str:
    return "x" * 500


@flow
def fill() -> None:
    greet("Marvin")
    greet("Trillian")
    short_lived()
    forever()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def result_files(session: Session) -> list[str]:
    path = session.settings.local_storage_path
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) if path.exists() else []


def test_ls_on_an_empty_cache_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """`cache ls` with no entries prints a friendly line, exit 0."""
    code, out, _ = cli(capsys, "cache", "ls")
    assert code == 0 and "empty" in out


def test_ls_lists_key_task_created_expires_and_size(capsys: pytest.CaptureFixture[str]) -> None:
    """`cache ls` shows one row per entry with the columns key, task, created, expires
    and size; an entry without expiration reads "never"."""
    fill()
    code, out, _ = cli(capsys, "cache", "ls")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["KEY", "TASK", "CREATED", "EXPIRES", "SIZE"]
    body = "\n".join(lines[1:])
    assert len(lines) == 5
    assert "greet-Marvin" in body and "greet-Trillian" in body and "short-lived" in body
    forever_row = next(line for line in lines if line.startswith("forever"))
    assert "never" in forever_row
    assert forever_row.split()[-1].isdigit() and int(forever_row.split()[-1]) >= 500


def test_ls_json_gives_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    """`cache ls --json` prints a JSON list with key, task name, run, times and size."""
    fill()
    code, out, _ = cli(capsys, "cache", "ls", "--json")
    assert code == 0
    entries = {e["key"]: e for e in json.loads(out)}
    assert set(entries) == {"greet-Marvin", "greet-Trillian", "short-lived", "forever"}
    marvin = entries["greet-Marvin"]
    assert marvin["task_name"] == "greet"
    assert marvin["size"] > 0 and marvin["task_run_id"]
    assert marvin["digest"].startswith("sha256:") and len(marvin["digest"]) == 7 + 64
    assert dt.datetime.fromisoformat(marvin["expires"]) > dt.datetime.fromisoformat(marvin["created"])
    assert entries["forever"]["expires"] is None and entries["forever"]["expired"] is False


def test_clear_needs_yes(capsys: pytest.CaptureFixture[str], headwater_session: Session) -> None:
    """`cache clear` without --yes refuses (exit 2) and deletes nothing."""
    fill()
    code, _, err = cli(capsys, "cache", "clear")
    assert code == 2 and "--yes" in err
    assert len(headwater_session.store.read_cache_entries()) == 4


def test_clear_yes_removes_every_entry_and_its_files(capsys: pytest.CaptureFixture[str],
                                                    headwater_session: Session) -> None:
    """`cache clear --yes` removes all entries and their result files; the next run
    computes again."""
    fill()
    assert len(result_files(headwater_session)) == 4
    code, out, _ = cli(capsys, "cache", "clear", "--yes")
    assert code == 0 and "Removed 4 cache entries" in out
    assert headwater_session.store.read_cache_entries() == []
    assert result_files(headwater_session) == []

    @flow
    def again() -> list[Any]:
        return [greet("Marvin", return_state=True)]

    assert again()[0].name == "Completed"


def test_clear_expired_keeps_fresh_entries(capsys: pytest.CaptureFixture[str],
                                           headwater_session: Session) -> None:
    """`cache clear --expired --yes` removes only entries past their expiration."""
    fill()
    time.sleep(0.1)
    code, out, _ = cli(capsys, "cache", "clear", "--expired", "--yes")
    assert code == 0 and "Removed 1 cache entry" in out
    keys = {e.key for e in headwater_session.store.read_cache_entries()}
    assert keys == {"greet-Marvin", "greet-Trillian", "forever"}
    assert len(result_files(headwater_session)) == 3


def test_clear_by_task_name(capsys: pytest.CaptureFixture[str], headwater_session: Session) -> None:
    """`cache clear --task greet --yes` removes only that task's entries."""
    fill()
    code, out, _ = cli(capsys, "cache", "clear", "--task", "greet", "--yes")
    assert code == 0 and "Removed 2 cache entries" in out
    assert {e.task_name for e in headwater_session.store.read_cache_entries()} == {"short_lived", "forever"}


def test_clear_by_unknown_task_names_the_tasks_that_have_entries(capsys: pytest.CaptureFixture[str],
                                                                 headwater_session: Session) -> None:
    """`cache clear --task nope --yes` deletes nothing and lists the tasks with entries."""
    fill()
    code, out, _ = cli(capsys, "cache", "clear", "--task", "nope", "--yes")
    assert code == 0
    assert "'nope'" in out and "greet" in out and "forever" in out
    assert len(headwater_session.store.read_cache_entries()) == 4


def test_cache_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`headwater cache` alone exits with a usage error naming ls|clear."""
    with pytest.raises(SystemExit) as info:
        main(["cache"])
    assert info.value.code == 2
    assert "ls|clear" in capsys.readouterr().err
