"""`headwater plugins`: every plugin with source, status and hooks; --json; --order HOOK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.cli import main
from headwater.session import DEFAULT_PLUGINS


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The command runs from a project directory holding a local hook file."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (root / "headwater_hooks.py").write_text(
        "def headwater_flow_run_name(flow, parameters):\n    return 'local-name'\n")
    monkeypatch.chdir(root)
    for key in ("HEADWATER_PLUGINS", "HEADWATER_DISABLE_PLUGINS", "HEADWATER_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(key, raising=False)
    return root


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["plugins", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_listing_shows_every_plugin_with_source_status_and_hooks(project, capsys):
    """The table lists each default plugin as builtin and loaded with the hooks it
    implements, and the local hook file of the current directory; exit code 0."""
    code, out, err = run(capsys)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["PLUGIN", "SOURCE", "DETAIL", "STATUS", "HOOKS"]
    by_name = {row.split()[0]: row for row in rows}
    for name in DEFAULT_PLUGINS:
        assert name in by_name, f"{name} missing from:\n{out}"
        assert f"headwater.plugins.{name}" in by_name[name] and " loaded " in by_name[name]
    assert "flow_run_name, task_run_name" in by_name["run_naming"]
    local = [row for row in rows if " local " in row]
    assert len(local) == 1 and "flow_run_name" in local[0]


def test_json_lists_the_same_plugins_machine_readably(project, capsys):
    """--json prints one object per plugin: name, source, detail, status, hooks."""
    code, out, _ = run(capsys, "--json")
    assert code == 0
    records = json.loads(out)
    names = [r["name"] for r in records]
    assert names[: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    naming = records[names.index("run_naming")]
    assert naming == {"name": "run_naming", "source": "builtin", "detail": "headwater.plugins.run_naming",
                      "status": "loaded", "hooks": ["headwater_flow_run_name", "headwater_task_run_name"]}
    local = [r for r in records if r["source"] == "local"]
    assert local == [{"name": str(project / "headwater_hooks.py"), "source": "local",
                      "detail": str(project / "headwater_hooks.py"), "status": "loaded",
                      "hooks": ["headwater_flow_run_name"]}]


def test_order_prints_the_effective_call_order_of_one_hook(project, capsys):
    """--order HOOK lists the implementations first-called first: the local file before
    the default, which is marked trylast; the headwater_ prefix may be left out."""
    code, out, _ = run(capsys, "--order", "headwater_flow_run_name")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Call order of headwater_flow_run_name (first called first):"
    assert lines[1] == f"  1. {project / 'headwater_hooks.py'}"
    assert lines[2] == "  2. run_naming  [trylast]"

    code, out, _ = run(capsys, "--order", "flow_run_name", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["hook"] == "headwater_flow_run_name"
    assert [item["plugin"] for item in data["order"]] == [str(project / "headwater_hooks.py"), "run_naming"]
    assert data["order"][1]["trylast"] is True


def test_order_of_an_unknown_hook_is_an_error_listing_the_hooks(project, capsys):
    """A misspelt hook name exits 2 with a message naming it and listing the real hooks."""
    code, out, err = run(capsys, "--order", "headwater_flow_name")
    assert code == 2
    assert "no hook named 'headwater_flow_name'" in err
    assert "headwater_flow_run_name" in err


def test_a_broken_plugin_is_listed_with_its_error_and_the_rest_still_listed(project, capsys, monkeypatch):
    """A plugin that fails to import shows as an error naming its source; every other
    plugin is still listed; the exit code is 1 and stderr names the broken plugin, in the
    table and in --json alike."""
    monkeypatch.setenv("HEADWATER_PLUGINS", "no_such_plugin_module_hw")
    code, out, err = run(capsys)
    assert code == 1
    broken = [row for row in out.splitlines() if row.startswith("no_such_plugin_module_hw")]
    assert len(broken) == 1
    assert "HEADWATER_PLUGINS" in broken[0] and "error: ModuleNotFoundError" in broken[0]
    assert all(name in out for name in DEFAULT_PLUGINS)
    assert "'no_such_plugin_module_hw'" in err

    code, out, err = run(capsys, "--json")
    assert code == 1
    records = {r["name"]: r for r in json.loads(out)}
    assert records["no_such_plugin_module_hw"]["source"] == "env"
    assert records["no_such_plugin_module_hw"]["status"].startswith("error")
    assert records["retries"]["status"] == "loaded"


def test_other_commands_refuse_to_run_with_a_broken_plugin(project, capsys, monkeypatch):
    """Commands other than `plugins` stop with one line naming the broken plugin and
    pointing to `headwater plugins`, not a traceback."""
    monkeypatch.setenv("HEADWATER_PLUGINS", "no_such_plugin_module_hw")
    code = main(["runs"])
    err = capsys.readouterr().err
    assert code == 1
    assert "'no_such_plugin_module_hw'" in err and "headwater plugins" in err
    assert "Traceback" not in err


def test_blocked_plugins_are_listed_as_blocked(project, capsys, monkeypatch):
    """A plugin named in HEADWATER_DISABLE_PLUGINS is listed with status blocked."""
    monkeypatch.setenv("HEADWATER_DISABLE_PLUGINS", "console_log")
    code, out, _ = run(capsys, "--json")
    assert code == 0
    records = {r["name"]: r for r in json.loads(out)}
    assert records["console_log"]["status"] == "blocked"
    assert records["console_log"]["hooks"] == []


def test_the_console_script_is_installed_and_runs(project, tmp_path):
    """The `headwater` console script exists next to the interpreter and lists plugins."""
    script = Path(sys.executable).parent / "headwater"
    if not script.exists():
        script = Path(shutil.which("headwater") or "headwater")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(tmp_path / "home")
    out = subprocess.run([str(script), "plugins", "--json"], capture_output=True, text=True,
                         cwd=project, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "run_naming" in [r["name"] for r in json.loads(out.stdout)]


def test_a_broken_local_hook_file_is_listed_with_the_hook_it_got_wrong(project, capsys):
    """A headwater_hooks.py with a misspelt hook is listed as an error naming the hook;
    the command still lists the other plugins and exits 1."""
    (project / "headwater_hooks.py").write_text(
        "def headwater_task_run_nam(task, parameters):\n    return 'x'\n")
    code, out, err = run(capsys, "--json")
    assert code == 1
    records = {r["name"]: r for r in json.loads(out)}
    local = records[str(project / "headwater_hooks.py")]
    assert local["source"] == "local"
    assert "unknown hook 'headwater_task_run_nam'" in local["status"]
    assert records["run_naming"]["status"] == "loaded"
    assert "headwater_hooks.py" in err


def test_a_broken_local_hook_file_keeps_the_table_narrow_and_prints_the_error_below(project, capsys):
    """The table names a local hook file once, relative to the current directory, and
    shows the first 60 characters of its error; the full error follows the table."""
    (project / "headwater_hooks.py").write_text(
        "def headwater_task_run_nam(task, parameters):\n    return 'x'\n")
    code, out, _ = run(capsys)
    assert code == 1
    table, errors = out.split("\nErrors:\n", 1)
    (local,) = [row for row in table.splitlines() if " local " in row]
    assert local.split()[0] == "headwater_hooks.py" and str(project) not in local.split("error:")[0]
    assert max(len(row) for row in table.splitlines()) < 180
    assert "did you mean 'headwater_task_run_name'?" in errors
    assert errors.strip().startswith("headwater_hooks.py: error: unknown hook 'headwater_task_run_nam'")
