"""HEADWATER_RESULT_STORAGE: a plain path is the local store there, a URL goes to the
result store registered for its scheme, and HEADWATER_LOCAL_STORAGE_PATH keeps working
when it is not set."""

from __future__ import annotations

import pytest

from headwater import Session, flow, task
from headwater.errors import ConfigurationError
from headwater.settings import Settings


@task(cache_key_fn=lambda context, parameters: f"half-{parameters['x']}")
def half(x):
    return x / 2


@flow
def halves():
    return [half(8), half(8, return_state=True).name]


def run_in(tmp_path, **settings):
    env = {"HEADWATER_HOME": str(tmp_path / "home"), **{f"HEADWATER_{k}": str(v) for k, v in settings.items()}}
    with Session(env=env) as session:
        answer = halves()
        entry = session.store.read_cache_entry("half-8")
    return answer, entry


def test_a_plain_path_is_the_local_store_in_that_directory(tmp_path):
    answer, entry = run_in(tmp_path, RESULT_STORAGE=tmp_path / "results",
                           LOCAL_STORAGE_PATH=tmp_path / "not-used")
    assert answer == [4.0, "Cached"]
    assert (tmp_path / "results" / entry.location).is_file()
    assert not (tmp_path / "not-used").exists()


def test_without_it_the_local_storage_path_keeps_working(tmp_path):
    answer, entry = run_in(tmp_path, LOCAL_STORAGE_PATH=tmp_path / "local")
    assert answer == [4.0, "Cached"]
    assert (tmp_path / "local" / entry.location).is_file()


def test_a_scheme_no_plugin_serves_is_an_error_saying_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError) as raised:
        run_in(tmp_path, RESULT_STORAGE="redis://cache/0")
    message = str(raised.value)
    assert message.startswith("HEADWATER_RESULT_STORAGE='redis://cache/0': no installed plugin serves redis:// ")
    assert "install a plugin that registers it (registry.add_result_store), or give a plain path" in message


@pytest.mark.parametrize("bad", ["3s://bucket", "://bucket", "s 3://bucket"])
def test_a_malformed_url_is_a_one_line_error(bad):
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_values({"RESULT_STORAGE": bad})
    assert str(raised.value) == (
        f"HEADWATER_RESULT_STORAGE={bad!r} is not a storage URL; expected a URL such as s3://bucket/prefix, "
        f"file:///shared/dir or memory://, or a plain path")


def test_it_may_be_written_in_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.headwater]\nresult_storage = "s3://bucket/prefix"\n')
    settings = Settings.load(env={}, start=tmp_path)
    assert settings.result_storage == "s3://bucket/prefix"
    assert settings.describe("RESULT_STORAGE", settings.result_storage).startswith(
        "result_storage = 's3://bucket/prefix' under [tool.headwater] in ")
