"""`headwater run FILE:FLOW -p key=value`: how parameter values are read."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from headwater.cli import main

FLOWS = textwrap.dedent('''
    import datetime
    from typing import Optional
    from headwater import flow

    @flow
    def typed(q: str = "", version: Optional[str] = None, n: int = 0, ratio: float = 0.0,
              on: bool = False, day: Optional[datetime.date] = None, ids: list[int] = []):
        return {"q": q, "version": version, "n": n, "ratio": ratio, "on": on,
                "day": str(day) if day else None, "ids": ids}

    @flow
    def untyped(v=None, items=None):
        return {"v": v, "items": items}
''')


@pytest.fixture
def flows_file(tmp_path: Path, headwater_session) -> str:
    path = tmp_path / "cli_flows.py"
    path.write_text(FLOWS)
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def result_of(out: str) -> dict:
    """The flow's return value, from the printed final state."""
    import ast

    return ast.literal_eval(out.strip().split("result=", 1)[1][:-1])


def test_a_str_parameter_gets_the_text_as_typed(flows_file, capsys):
    """-p q=123 and -p version=1.10 reach str / Optional[str] parameters unchanged."""
    code, out, err = run(capsys, f"{flows_file}:typed", "-p", "q=123", "-p", "version=1.10")
    assert code == 0, err
    result = result_of(out)
    assert result["q"] == "123" and result["version"] == "1.10"


def test_other_annotations_are_coerced_by_the_flows_validation(flows_file, capsys):
    """ints, floats, bools and dates are coerced from the text; JSON lists are decoded."""
    code, out, err = run(capsys, f"{flows_file}:typed", "-p", "n=7", "-p", "ratio=1.10", "-p", "on=true",
                         "-p", "day=2026-11-25", "-p", "ids=[1, 2]")
    assert code == 0, err
    result = result_of(out)
    assert result["n"] == 7 and result["ratio"] == 1.1 and result["on"] is True
    assert result["day"] == "2026-11-25" and result["ids"] == [1, 2]


def test_an_invalid_value_is_reported_as_typed(flows_file, capsys):
    """A bad int value fails the run with a message echoing the text the user typed."""
    code, out, err = run(capsys, f"{flows_file}:typed", "-p", "n=1.10")
    assert code == 1
    assert "n='1.10'" in out + err


def test_unannotated_numbers_keep_what_was_typed(flows_file, capsys):
    """Untyped: 1.10 stays the text '1.10' (not 1.1); 3 and JSON lists are decoded."""
    code, out, err = run(capsys, f"{flows_file}:untyped", "-p", "v=1.10", "-p", "items=[3, 4]")
    assert code == 0, err
    assert result_of(out) == {"v": "1.10", "items": [3, 4]}
    code, out, err = run(capsys, f"{flows_file}:untyped", "-p", "v=3")
    assert result_of(out)["v"] == 3


def test_a_repeated_parameter_is_an_error_naming_it(flows_file, capsys):
    """-p q=a -p q=b exits 2 naming q instead of silently keeping one."""
    code, _, err = run(capsys, f"{flows_file}:typed", "-p", "q=a", "-p", "q=b")
    assert code == 2
    assert "'q' given twice" in err


def test_an_unknown_parameter_is_an_error_listing_the_flows_parameters(flows_file, capsys):
    """A misspelt key exits 2 naming it and listing the parameters the flow takes."""
    code, _, err = run(capsys, f"{flows_file}:typed", "-p", "qq=a")
    assert code == 2
    assert "no parameter 'qq'" in err and "q, version, n, ratio, on, day, ids" in err


def test_help_explains_how_values_are_read(capsys):
    """`headwater run --help` says how -p values of unannotated parameters are read."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "Unannotated parameters" in out and "1.10" in out
