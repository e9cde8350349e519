"""contrib/headwater-fsspec: results on fsspec file systems, checked by the conformance
suite on ``file://``, ``memory://`` and a real S3 endpoint on loopback (moto's server
mode with s3fs), and end to end: processes sharing nothing but the run store's URL and
``HEADWATER_RESULT_STORAGE`` share cache hits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

# Not skipped when missing: `make test` installs fsspec, s3fs and moto[server] (the dev
# extra) and headwater-fsspec (contrib/), so a missing one is an error to see.
import fsspec
import pytest
from headwater import Session, flow, task
from headwater.errors import ConfigurationError
from headwater.plugins.local_results import builtin_serializers
from headwater.testing import ResultStoreConformance
from headwater_fsspec.store import FsspecResultStore

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import CREDENTIALS, client_env, s3_server  # noqa: E402

BUCKET = "headwater-tests"


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        s3 = s3fs_for(endpoint)
        s3.mkdir(BUCKET)
        yield endpoint


def s3fs_for(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=endpoint, skip_instance_cache=True)


class RawBytes:
    """The conformance suite's damage tests, through the store's own file system."""

    def read_bytes(self, store, location):
        return store.fs.cat_file(f"{store.root}/{location}")

    def replace_bytes(self, store, location, data):
        store.fs.pipe_file(f"{store.root}/{location}", data)


class TestFileURL(RawBytes, ResultStoreConformance):
    def make_store(self, tmp_path):
        return FsspecResultStore.from_url((tmp_path / "shared").as_uri(), builtin_serializers())


class TestMemoryURL(RawBytes, ResultStoreConformance):
    def make_store(self, tmp_path):
        return FsspecResultStore.from_url(f"memory://conformance-{uuid.uuid4().hex}", builtin_serializers())


class TestS3(RawBytes, ResultStoreConformance):
    #: Above s3fs's 50 MiB part size, so the value goes up as a multipart upload.
    large_value_bytes = 60 * 1024 * 1024

    @pytest.fixture(autouse=True)
    def _endpoint(self, s3_endpoint):
        self.endpoint = s3_endpoint

    def make_store(self, tmp_path):
        return FsspecResultStore.from_url(
            f"s3://{BUCKET}/conformance-{uuid.uuid4().hex}", builtin_serializers(),
            key="testing", secret="testing", endpoint_url=self.endpoint)


# -- the store's own promises --------------------------------------------------------


def test_file_urls_are_written_then_moved_and_leave_no_temporary_file(tmp_path):
    store = FsspecResultStore.from_url((tmp_path / "r").as_uri(), builtin_serializers())
    assert store.renames
    location, _, digest = store.write("k", list(range(100)))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [location]
    assert store.read(location, digest=digest) == list(range(100))


def test_names_and_bytes_are_the_local_stores(tmp_path):
    """The same key gets the same name, and the same bytes, as in the local store: a
    directory written by one can be read by the other."""
    from headwater.plugins.local_results import LocalResultStore

    local = LocalResultStore(tmp_path / "r", builtin_serializers())
    location, _, digest = local.write("cache-abc", {"x": 1})
    shared = FsspecResultStore.from_url((tmp_path / "r").as_uri(), builtin_serializers())
    assert shared.location_for("cache-abc") == location
    assert shared.read(location, digest=digest) == {"x": 1}
    assert shared.write("cache-abc", {"x": 1}) == (location, *local.write("cache-abc", {"x": 1})[1:])


def test_a_missing_bucket_is_a_setup_error_naming_the_storage(s3_endpoint):
    from headwater.errors import StoreError

    store = FsspecResultStore.from_url("s3://no-such-bucket/p", builtin_serializers(),
                                       key="testing", secret="testing", endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/p \(HEADWATER_RESULT_STORAGE\)"):
        store.write("k", 1)


def test_a_scheme_whose_file_system_is_not_installed_names_the_package():
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigurationError, match=r"needs gcsfs, which is not installed; pip install gcsfs"):
        FsspecResultStore.from_url("gcs://bucket/prefix", builtin_serializers())


# -- through the setting -------------------------------------------------------------


def test_the_setting_sends_a_flows_results_to_the_url(tmp_path):
    root = f"memory://setting-{uuid.uuid4().hex}"
    calls = []

    @task(cache_key_fn=lambda context, parameters: f"triple-{parameters['x']}")
    def triple(x):
        calls.append(x)
        return 3 * x

    @flow
    def triples():
        return [triple(5), triple(5, return_state=True).name]

    env = {"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_RESULT_STORAGE": root}
    with Session(env=env) as session:
        assert triples() == [15, "Cached"]
        entry = session.store.read_cache_entry("triple-5")
    assert calls == [5]
    memory = fsspec.filesystem("memory")
    assert memory.ls(root.removeprefix("memory://"), detail=False) == [f"/{root.removeprefix('memory://')}/{entry.location}"]
    assert not (tmp_path / "home" / "storage").exists(), "a result went to the local store"


def test_without_the_plugin_a_url_is_an_error_naming_what_to_install(tmp_path):
    @task(persist_result=True)
    def one():
        return 1

    @flow
    def ones():
        return one(return_state=True)

    env = {"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_RESULT_STORAGE": "s3://bucket/prefix",
           "HEADWATER_DISABLE_PLUGINS": "fsspec"}
    with Session(env=env), pytest.raises(ConfigurationError) as raised:
        ones()
    assert str(raised.value) == (
        "HEADWATER_RESULT_STORAGE='s3://bucket/prefix': no installed plugin serves s3:// (served: local://); "
        "install one, e.g. pip install 'headwater-fsspec[s3]'")


# -- end to end: two processes, one S3 bucket ------------------------------------------

SCRIPT = textwrap.dedent("""
    from headwater import flow, task

    @task(cache_key_fn=lambda context, parameters: f"square-{parameters['x']}")
    def square(x):
        print("computing", x)
        return x * x

    @flow(persist_result=True)
    def squares(x):
        state = square(x, return_state=True)
        return state.name, state.result()

    print("result:", squares(7))
""")


def run_script(script: Path, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    environment.update(env, HEADWATER_HOME=str(home))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=environment,
                          timeout=120, cwd=script.parent)


def test_a_second_process_gets_the_cache_hit_from_s3(tmp_path, s3_endpoint):
    script = tmp_path / "flow_on_s3.py"
    script.write_text(SCRIPT)
    storage = f"s3://{BUCKET}/e2e-{uuid.uuid4().hex}"
    # The processes share the run store (its cache index) and the bucket, nothing else.
    env = {**client_env(s3_endpoint), "HEADWATER_RESULT_STORAGE": storage,
           "HEADWATER_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}

    first = run_script(script, tmp_path / "home-a", env)
    assert first.returncode == 0, first.stderr
    assert "computing 7" in first.stdout and "result: ('Completed', 49)" in first.stdout

    second = run_script(script, tmp_path / "home-b", env)
    assert second.returncode == 0, second.stderr
    assert "computing" not in second.stdout and "result: ('Cached', 49)" in second.stdout

    with Session(env={"HEADWATER_HOME": str(tmp_path / "home-x"),
                      "HEADWATER_DATABASE_URL": env["HEADWATER_DATABASE_URL"]}) as session:
        entry = session.store.read_cache_entry("square-7")
    s3 = s3fs_for(s3_endpoint)
    cached = f"{storage.removeprefix('s3://')}/{entry.location}"
    assert cached in s3.ls(storage.removeprefix("s3://"), detail=False)  # with the flow runs' results
    for home in ("home-a", "home-b"):
        assert not (tmp_path / home / "storage").exists(), "a result went to a local directory"

    # The result gone from the bucket: a miss with one warning, and the task runs again.
    s3.rm_file(cached)
    third = run_script(script, tmp_path / "home-c", env)
    assert third.returncode == 0, third.stderr
    assert "computing 7" in third.stdout and "result: ('Completed', 49)" in third.stdout
    warnings = [line for line in third.stderr.splitlines() + third.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "does not exist" in warnings[0], warnings


def test_cache_clear_deletes_the_results_at_the_url(tmp_path, capsys, monkeypatch):
    from headwater.cli import main

    root = f"memory://clear-{uuid.uuid4().hex}"

    @task(cache_key_fn=lambda context, parameters: "kept-at-a-url")
    def value():
        return "v"

    @flow
    def fill():
        return value()

    monkeypatch.setenv("HEADWATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADWATER_RESULT_STORAGE", root)
    memory = fsspec.filesystem("memory")
    with Session():
        fill()
    [stored] = memory.ls(root.removeprefix("memory://"), detail=False)
    assert main(["cache", "clear", "--yes"]) == 0
    assert "Removed 1 cache entry." in capsys.readouterr().out
    assert not memory.exists(stored)


def test_cache_prune_at_a_url_removes_expired_entries_and_keeps_what_runs_refer_to(tmp_path, capsys,
                                                                                  monkeypatch):
    """As in a local directory: the expired entry goes; its result stays while the task
    run that wrote it refers to it (``headwater runs retry`` may reuse it)."""
    import datetime as dt
    import time

    from headwater.cli import main

    root = f"memory://prune-{uuid.uuid4().hex}"

    @task(cache_key_fn=lambda context, parameters: f"brief-{parameters['x']}",
          cache_expiration=dt.timedelta(seconds=0.05))
    def brief(x):
        return x

    @task(cache_key_fn=lambda context, parameters: "lasting")
    def lasting():
        return "kept"

    @flow
    def fill():
        return brief(1), lasting()

    monkeypatch.setenv("HEADWATER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HEADWATER_RESULT_STORAGE", root)
    memory = fsspec.filesystem("memory")
    with Session() as session:
        fill()
        brief_entry = session.store.read_cache_entry("brief-1")
        lasting_entry = session.store.read_cache_entry("lasting")
    time.sleep(0.1)
    path = root.removeprefix("memory://")
    assert main(["cache", "prune"]) == 0
    out = capsys.readouterr().out
    assert f"Removed 1 expired cache entry and 0 results they kept, at {root}" in out
    with Session() as session:
        assert session.store.read_cache_entry("brief-1") is None
        assert session.store.read_cache_entry("lasting") is not None
    assert memory.exists(f"{path}/{brief_entry.location}")
    assert memory.exists(f"{path}/{lasting_entry.location}")
