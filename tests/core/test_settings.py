"""HEADWATER_* settings from the environment and [tool.headwater] in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.errors import ConfigurationError
from headwater.settings import Settings


def project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.headwater]\n" + table)
    sub = tmp_path / "src" / "pkg"
    sub.mkdir(parents=True)
    return sub


def test_defaults_derive_from_headwater_home(tmp_path):
    """Storage and database default to paths under HEADWATER_HOME; INFO logging; the
    concurrent runner; no extra plugins; autoload on."""
    settings = Settings.load({"HEADWATER_HOME": str(tmp_path)}, start=tmp_path)
    assert settings.home == tmp_path
    assert settings.local_storage_path == tmp_path / "storage"
    assert settings.database_url == f"sqlite:///{tmp_path / 'headwater.db'}"
    assert (settings.logging_level, settings.task_runner) == ("INFO", "concurrent")
    assert settings.plugins == () and settings.disable_plugins == frozenset()
    assert settings.disable_plugin_autoload is False


def test_home_defaults_to_dot_headwater_in_the_user_home(tmp_path, monkeypatch):
    """Without HEADWATER_HOME the home is ~/.headwater."""
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.load({}, start=tmp_path)
    assert settings.home == tmp_path / ".headwater"


def test_plugin_lists_are_comma_separated_and_trimmed(tmp_path):
    """HEADWATER_PLUGINS and HEADWATER_DISABLE_PLUGINS take comma-separated names."""
    settings = Settings.load({"HEADWATER_HOME": str(tmp_path),
                              "HEADWATER_PLUGINS": " a.b , c ,,",
                              "HEADWATER_DISABLE_PLUGINS": "run_naming,console_log"}, start=tmp_path)
    assert settings.plugins == ("a.b", "c")
    assert settings.disable_plugins == frozenset({"run_naming", "console_log"})


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("YES", True),
                                                ("0", False), ("false", False), ("", False)])
def test_autoload_flag_accepts_the_usual_spellings(tmp_path, raw, expected):
    """HEADWATER_DISABLE_PLUGIN_AUTOLOAD reads 1/0, true/false, yes/no."""
    settings = Settings.load({"HEADWATER_HOME": str(tmp_path),
                              "HEADWATER_DISABLE_PLUGIN_AUTOLOAD": raw}, start=tmp_path)
    assert settings.disable_plugin_autoload is expected


def test_bad_values_name_the_setting_and_value(tmp_path):
    """A non-boolean flag or an unknown logging level is an error naming the setting,
    the value and what is accepted."""
    with pytest.raises(ConfigurationError, match=r"HEADWATER_DISABLE_PLUGIN_AUTOLOAD='maybe'.*true/false"):
        Settings.load({"HEADWATER_DISABLE_PLUGIN_AUTOLOAD": "maybe"}, start=tmp_path)
    with pytest.raises(ConfigurationError, match=r"HEADWATER_LOGGING_LEVEL='LOUD'.*DEBUG"):
        Settings.load({"HEADWATER_LOGGING_LEVEL": "LOUD"}, start=tmp_path)


def test_pyproject_table_is_read_from_the_project_root_either_spelling(tmp_path):
    """[tool.headwater] in the nearest pyproject.toml above the start directory is read;
    keys may be written `task_runner` or `HEADWATER_TASK_RUNNER`; lists are allowed."""
    start = project(tmp_path, 'task_runner = "sequential"\nHEADWATER_LOGGING_LEVEL = "warning"\n'
                              'disable_plugins = ["console_log"]\n')
    settings = Settings.load({"HEADWATER_HOME": str(tmp_path / "home")}, start=start)
    assert settings.task_runner == "sequential"
    assert settings.logging_level == "WARNING"
    assert settings.disable_plugins == frozenset({"console_log"})


def test_the_environment_wins_over_pyproject(tmp_path):
    """A HEADWATER_* variable overrides the same key in [tool.headwater]."""
    start = project(tmp_path, 'task_runner = "sequential"\n')
    settings = Settings.load({"HEADWATER_TASK_RUNNER": "concurrent"}, start=start)
    assert settings.task_runner == "concurrent"


def test_an_unknown_pyproject_key_names_the_key_and_the_file(tmp_path):
    """A typo under [tool.headwater] fails, naming the key, the file and the valid keys."""
    start = project(tmp_path, 'task_runer = "sequential"\n')
    with pytest.raises(ConfigurationError) as info:
        Settings.load({}, start=start)
    assert "'task_runer'" in str(info.value)
    assert str(tmp_path / "pyproject.toml") in str(info.value)
    assert "task_runner" in str(info.value)


def test_an_unreadable_pyproject_is_a_clear_error(tmp_path):
    """Broken TOML in the project's pyproject.toml is reported with the file's path."""
    (tmp_path / "pyproject.toml").write_text("[tool.headwater\n")
    with pytest.raises(ConfigurationError, match="pyproject.toml"):
        Settings.load({}, start=tmp_path)


def test_a_bad_pyproject_value_names_the_file_and_key_not_an_environment_variable(tmp_path):
    """`task_runner = 5` under [tool.headwater] is reported as that key in that file,
    never as a HEADWATER_* variable the user did not set."""
    start = project(tmp_path, "task_runner = 5\n")
    with pytest.raises(ConfigurationError) as info:
        Settings.load({}, start=start)
    message = str(info.value)
    assert f"task_runner = 5 under [tool.headwater] in {tmp_path / 'pyproject.toml'}" in message
    assert "HEADWATER_TASK_RUNNER" not in message
    (tmp_path / "other").mkdir()
    start = project(tmp_path / "other", 'logging_level = "LOUD"\n')
    with pytest.raises(ConfigurationError, match=r"logging_level = 'LOUD' under \[tool.headwater\]"):
        Settings.load({}, start=start)


def test_an_unknown_runner_name_from_pyproject_names_the_file(tmp_path):
    """A task runner name from [tool.headwater] that no plugin registered fails the flow
    run with a message naming the pyproject key and file."""
    from headwater import Session, flow

    start = project(tmp_path, 'task_runner = "dsak"\n')
    settings = Settings.load({"HEADWATER_HOME": str(tmp_path / "home")}, start=start)
    assert settings.describe("TASK_RUNNER", "dsak") == (
        f"task_runner = 'dsak' under [tool.headwater] in {tmp_path / 'pyproject.toml'}")

    @flow
    def noop():
        return 1

    with Session(settings=settings):
        state = noop(return_state=True)
    assert state.is_failed()
    assert "task_runner = 'dsak' under [tool.headwater]" in state.message


def test_persist_results_is_a_flag_from_the_environment_or_pyproject(tmp_path):
    assert Settings.load({}, start=tmp_path).persist_results is False
    assert Settings.load({"HEADWATER_PERSIST_RESULTS": "yes"}, start=tmp_path).persist_results is True
    assert Settings.load({}, start=project(tmp_path, "persist_results = true\n")).persist_results is True
    with pytest.raises(ConfigurationError, match=r"HEADWATER_PERSIST_RESULTS='sometimes'.*true/false"):
        Settings.load({"HEADWATER_PERSIST_RESULTS": "sometimes"}, start=tmp_path)


def test_the_heartbeat_interval_is_a_positive_number_of_seconds(tmp_path):
    """HEADWATER_HEARTBEAT_SECONDS (a store shared by many hosts beats at it): 10 by
    default, a number from the environment or pyproject, anything else named in an error."""
    assert Settings.load({}, start=tmp_path).heartbeat_seconds == 10.0
    assert Settings.load({"HEADWATER_HEARTBEAT_SECONDS": "0.5"}, start=tmp_path).heartbeat_seconds == 0.5
    assert Settings.load({}, start=project(tmp_path, "heartbeat_seconds = 3\n")).heartbeat_seconds == 3.0
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigurationError, match=f"HEADWATER_HEARTBEAT_SECONDS='{bad}' is not a number of seconds"):
            Settings.load({"HEADWATER_HEARTBEAT_SECONDS": bad}, start=tmp_path)
