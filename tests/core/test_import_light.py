"""``import headwater`` stays light: plugins load at the first run, never at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(tmp_path / "home")
    return env


def imported_by(code: str, tmp_path) -> set[str]:
    """Every module imported while running ``code``: what ``-X importtime`` reports, plus
    ``sys.modules`` at the end (``importlib.import_module`` bypasses ``-X importtime``,
    and that is how plugins are imported)."""
    code += "\nimport sys, json; print(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, env=clean_env(tmp_path), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules


def heavy(modules: set[str]) -> list[str]:
    """The modules that must not be part of ``import headwater``."""
    banned_prefixes = (
        "headwater.plugins",   # no plugin
        "headwater_dask",      # no contrib distribution
        "headwater.cli",       # no command line
        "headwater.session",   # no session, hence no plugin manager
        "pluggy",              # no plugin manager at all
        "importlib.metadata",  # no entry-point scan
        "argparse",
        "sqlite3",
        "_sqlite3",
        "pydantic",
    )
    return sorted(m for m in modules if m.startswith(banned_prefixes))


def test_import_headwater_imports_no_plugin_cli_store_or_entry_point_scan(tmp_path):
    """`python -X importtime -c "import headwater"` shows no plugin module, no pluggy or
    importlib.metadata (so no entry-point scan), no argparse/CLI, no sqlite3, no pydantic
    and no contrib package."""
    modules = imported_by("import headwater", tmp_path)
    assert "headwater" in modules  # the measurement itself works
    assert heavy(modules) == []


def test_decorating_flows_and_tasks_loads_no_plugin(tmp_path):
    """Defining flows and tasks validates their options but still loads no plugin: the
    plugin manager appears only when something runs."""
    code = (
        "from headwater import flow, task\n"
        "@task\n"
        "def t(): return 1\n"
        "@flow\n"
        "def f(): return t()\n"
    )
    modules = imported_by(code, tmp_path)
    assert sorted(m for m in modules if m.startswith(("headwater.plugins", "pluggy", "sqlite3"))) == []


def test_the_first_run_loads_the_plugins(tmp_path):
    """The counterpart: running a flow does load the default plugins (so the checks above
    are not passing because nothing is ever loaded)."""
    code = (
        "from headwater import flow\n"
        "@flow\n"
        "def f(): return 1\n"
        "assert f() == 1\n"
    )
    modules = imported_by(code, tmp_path)
    assert {"pluggy", "headwater.plugins.run_naming", "sqlite3"} <= modules
