"""Session: owns settings, plugin manager, registry and run store; activation and closing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from headwater import Session, flow, get_store, hookimpl
from headwater.errors import StoreError, UnknownComponentError


@flow
def double(x: int) -> int:
    return 2 * x


def env_for(tmp_path, **extra):
    return {"HEADWATER_HOME": str(tmp_path / "home"), **extra}


def test_with_session_makes_it_current_and_runs_are_recorded_in_its_store(tmp_path):
    """Inside `with Session(...)`, runs go to that session's store and get_store() is it;
    leaving the block restores the session that was active before."""
    outer = Session.current()
    with Session(env=env_for(tmp_path)) as session:
        assert Session.current() is session
        assert double(3) == 6
        assert get_store() is session.store
        assert [r.flow_name for r in session.store.read_flow_runs()] == ["double"]
    assert Session.current() is outer
    assert outer.store.read_flow_runs(flow_name="double") == []


def test_sessions_are_isolated_from_each_other(tmp_path):
    """Two sessions over different homes have separate plugin managers and stores: a
    plugin given to one does not run in the other."""
    seen = []

    class Observer:
        @hookimpl
        def headwater_state_changed(self, run, previous, state):
            seen.append(state.name)

    with Session(env=env_for(tmp_path / "a"), plugins=[Observer()]) as first:
        double(1)
    count = len(seen)
    assert count > 0
    with Session(env=env_for(tmp_path / "b")) as second:
        double(1)
        assert second.pm is not first.pm
        assert len(second.store.read_flow_runs()) == 1
    assert len(seen) == count


def test_settings_come_from_the_env_mapping_given_to_the_session(tmp_path):
    """Session(env=...) reads HEADWATER_* from that mapping instead of os.environ."""
    session = Session(env=env_for(tmp_path, HEADWATER_LOGGING_LEVEL="debug",
                                  HEADWATER_DATABASE_URL="memory://"))
    assert session.settings.logging_level == "DEBUG"
    assert session.settings.home == tmp_path / "home"
    with session:
        assert double(2) == 4
        assert type(session.store).__name__ == "MemoryRunStore"
    assert not (tmp_path / "home" / "headwater.db").exists()


def test_close_unconfigures_plugins_once_and_is_safe_twice(tmp_path):
    """Closing calls headwater_unconfigure once; a second close does nothing; a closed
    session refuses to open a new store with a clear error."""
    calls = []

    class Tracker:
        @hookimpl
        def headwater_unconfigure(self, session):
            calls.append(session)

    session = Session(env=env_for(tmp_path), plugins=[Tracker()])
    with session:
        double(1)
    session.close()
    assert calls == [session]
    with pytest.raises(StoreError, match="closed"):
        session.store


def test_an_unknown_database_scheme_names_the_url_and_the_known_schemes(tmp_path):
    """HEADWATER_DATABASE_URL with a scheme no plugin serves is an error naming it."""
    session = Session(env=env_for(tmp_path, HEADWATER_DATABASE_URL="oracle://db/x"))
    with session, pytest.raises(UnknownComponentError) as info:
        session.store
    assert "'oracle'" in str(info.value)
    assert "sqlite" in str(info.value)


def test_registered_components_record_which_plugin_added_them(tmp_path):
    """The registry built at load time holds the default components, each with the
    plugin that registered it, and a later plugin replaces an entry of the same name."""

    class Replaces:
        __name__ = "replacer"

        @staticmethod
        def headwater_register_components(registry):
            registry.add_task_runner("sequential", object)

    with Session(env=env_for(tmp_path), plugins=[Replaces()]) as session:
        runners = {name: (factory, source) for name, factory, source in session.registry.items("task_runner")}
    assert runners["concurrent"][1] == "concurrent_runner"
    assert runners["sequential"] == (object, "replacer")


def test_the_process_session_is_made_lazily_on_first_use(tmp_path):
    """Without any `with Session()`, the first run makes one process-wide session over
    HEADWATER_HOME; importing and decorating alone create nothing on disk."""
    code = (
        "import os, headwater\n"
        "from headwater import flow\n"
        "@flow\n"
        "def f(): return 1\n"
        "home = os.environ['HEADWATER_HOME']\n"
        "assert not os.path.exists(home), 'created before any run'\n"
        "assert f() == 1\n"
        "from headwater.session import Session\n"
        "assert Session.current() is Session.current()\n"
        "assert len(headwater.get_store().read_flow_runs()) == 1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "home").exists()


def test_a_flow_run_in_a_plain_thread_uses_the_surrounding_session(tmp_path):
    """A flow started in a thread (which does not inherit context variables) is recorded in
    the session of the enclosing ``with Session()`` block, not a separate process session."""
    import threading

    from headwater import Session, flow
    from headwater.settings import Settings

    @flow
    def in_thread() -> int:
        return 7

    settings = Settings.from_values({"HOME": str(tmp_path / "threaded")})
    results = []
    with Session(settings=settings) as session:
        worker = threading.Thread(target=lambda: results.append(in_thread(return_state=True)))
        worker.start()
        worker.join()
        session.store.flush()
        runs = session.store.read_flow_runs()
    assert results[0].result() == 7
    assert [r.flow_name for r in runs] == ["in-thread"]


def test_a_hook_file_loaded_by_another_thread_meanwhile_applies_only_below_its_directory(tmp_path):
    """While one thread binds the hooks for the flows of a directory, another thread loads
    the headwater_hooks.py of a sibling directory: the sibling's hook never names the
    first directory's flow runs."""
    import importlib.util
    import textwrap
    import threading

    from headwater import bindings as bindings_module

    root = tmp_path / "proj"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (root / "b" / "headwater_hooks.py").write_text(textwrap.dedent("""
        def headwater_flow_run_name(flow, parameters):
            return "from-b"
    """))
    (root / "a" / "flows.py").write_text(textwrap.dedent("""
        from headwater import flow
        from headwater.runtime import flow_run

        @flow
        def in_a():
            return flow_run.name
    """))
    spec = importlib.util.spec_from_file_location("flows_in_a_sibling_race", root / "a" / "flows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    original = bindings_module.FlowBindings.__init__
    loader: list[threading.Thread] = []

    def bind_while_b_loads(self, session, excluded):
        if not loader:  # the first binding (for a/): b's file loads meanwhile
            loader.append(threading.Thread(target=session.load_local_hooks, args=(root / "b",)))
            loader[0].start()
            loader[0].join(0.5)  # while the session's lock is held, it waits for us instead
        original(self, session, excluded)

    with Session(env=env_for(tmp_path)) as session:
        session.pm
        bindings_module.FlowBindings.__init__ = bind_while_b_loads
        try:
            first = module.in_a()
        finally:
            bindings_module.FlowBindings.__init__ = original
            if loader:
                loader[0].join()
        b_hooks = str((root / "b" / "headwater_hooks.py").resolve())
        assert loader and any(record.name == b_hooks and record.status == "loaded"
                              for record in session.records)
        assert first != "from-b"
        assert module.in_a() != "from-b"
