"""Where plugins come from and in which order they are called (DESIGN §4.3).

Each test names flow runs through ``headwater_flow_run_name`` implementations placed in
different sources, and reads back which one won.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from headwater import Session, hookimpl
from headwater.errors import PluginError

NAMING_BODY = """
def headwater_flow_run_name(flow, parameters):
    return {name!r}
"""

FLOW_SOURCE = """
from headwater import flow
from headwater.runtime import flow_run


@flow
def {func}():
    return flow_run.name
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def naming_plugin(path: Path, name: str) -> Path:
    """A module or hook file whose flow_run_name hook answers ``name``."""
    return write(path, NAMING_BODY.format(name=name))


def make_distribution(site: Path, dist: str, version: str, ep_name: str, module: str, body: str) -> None:
    """Install a distribution the way an installer lays it out: module + .dist-info."""
    write(site / f"{module}.py", body)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    write(info / "entry_points.txt", f"[headwater.plugins]\n{ep_name} = {module}\n")
    write(info / "RECORD", "")


def load_flow(path: Path, func: str) -> Any:
    """Import a flow from a file, as a user's module would define it."""
    write(path, FLOW_SOURCE.format(func=func))
    spec = importlib.util.spec_from_file_location(f"flows_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, func)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HEADWATER_HOME": str(tmp_path / "home"), **extra}


def record(session: Session, name: str) -> Any:
    matches = [r for r in session.records if r.name == name]
    assert matches, f"no plugin record named {name!r}: {[r.name for r in session.records]}"
    return matches[0]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for throwaway plugin modules and distributions."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for name in [m for m in sys.modules if m.startswith("hwtest_")]:
        del sys.modules[name]


# -- entry points -----------------------------------------------------------------------


def test_an_entry_point_distribution_on_pythonpath_is_loaded_and_its_hook_wins(tmp_path):
    """A package that declares the entry point group is found, listed with its
    distribution and version, and its hook overrides the default run naming."""
    site = tmp_path / "site"
    make_distribution(site, "hw-namer", "1.2.3", "namer", "hw_namer",
                      NAMING_BODY.format(name="named-by-entry-point"))
    script = textwrap.dedent("""
        import json
        from headwater import Session, flow
        from headwater.runtime import flow_run

        @flow
        def probe():
            return flow_run.name

        with Session() as session:
            name = probe()
            records = [vars(r) | {"plugin": None} for r in session.records]
        print(json.dumps({"name": name, "records": records}))
    """)
    env = {**os.environ, "PYTHONPATH": str(site), "HEADWATER_HOME": str(tmp_path / "home")}
    env.pop("HEADWATER_DISABLE_PLUGIN_AUTOLOAD", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["name"] == "named-by-entry-point"
    namer = [r for r in data["records"] if r["name"] == "namer"][0]
    assert (namer["source"], namer["detail"], namer["status"]) == ("entrypoint", "hw-namer 1.2.3", "loaded")
    assert namer["hooks"] == ["headwater_flow_run_name"]


def test_a_blocked_entry_point_is_never_imported(tmp_path, site):
    """HEADWATER_DISABLE_PLUGINS=<entry-point name> skips the plugin without importing
    its module, so even a module that would fail on import does no harm."""
    make_distribution(site, "hw-bomb", "0.1", "bomb", "hwtest_bomb",
                      "raise RuntimeError('the blocked module was imported')\n")
    with Session(env=env_for(tmp_path, HEADWATER_DISABLE_PLUGINS="bomb")) as session:
        session.pm
        assert record(session, "bomb").status == "blocked"
    assert "hwtest_bomb" not in sys.modules


def test_autoload_off_skips_entry_points_entirely(tmp_path, site):
    """HEADWATER_DISABLE_PLUGIN_AUTOLOAD=1 loads no entry point plugin at all."""
    make_distribution(site, "hw-auto", "0.1", "auto", "hwtest_auto",
                      NAMING_BODY.format(name="should-not-be-used"))
    with Session(env=env_for(tmp_path, HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")) as session:
        names = [r.name for r in session.records] if session.pm else []
    assert "auto" not in names
    assert "hwtest_auto" not in sys.modules


# -- HEADWATER_PLUGINS and precedence ---------------------------------------------------


def test_headwater_plugins_modules_load_and_override_entry_points(tmp_path, site):
    """A module named in HEADWATER_PLUGINS is loaded after entry points, so its hook is
    called first; a Session(plugins=[...]) plugin is called before both."""
    make_distribution(site, "hw-ep", "0.1", "ep", "hwtest_ep", NAMING_BODY.format(name="from-ep"))
    naming_plugin(site / "hwtest_env.py", "from-env")
    probe = load_flow(tmp_path / "flows" / "probe.py", "probe")
    env = env_for(tmp_path, HEADWATER_PLUGINS="hwtest_env")
    with Session(env=env) as session:
        assert probe() == "from-env"
        assert record(session, "hwtest_env").source == "env"

    class Api:
        @hookimpl
        def headwater_flow_run_name(self, flow, parameters):
            return "from-api"

    with Session(env=env, plugins=[Api()]):
        assert probe() == "from-api"


def test_a_blocked_headwater_plugins_module_is_never_imported(tmp_path, site):
    """A module both requested and blocked is listed as blocked and never imported."""
    write(site / "hwtest_blocked.py", "raise RuntimeError('imported')\n")
    env = env_for(tmp_path, HEADWATER_PLUGINS="hwtest_blocked", HEADWATER_DISABLE_PLUGINS="hwtest_blocked")
    with Session(env=env) as session:
        session.pm
        assert record(session, "hwtest_blocked").status == "blocked"
    assert "hwtest_blocked" not in sys.modules


def test_a_default_plugin_can_be_blocked_by_name(tmp_path):
    """Blocking 'run_naming' (or its module name) leaves it out: it is listed as blocked
    and no plugin implements the run-naming hook any more."""
    for blocked in ("run_naming", "headwater.plugins.run_naming"):
        with Session(env=env_for(tmp_path, HEADWATER_DISABLE_PLUGINS=blocked)) as session:
            assert session.pm.get_plugin("run_naming") is None
            assert record(session, "run_naming").status == "blocked"
            assert session.pm.hook.headwater_flow_run_name.get_hookimpls() == []


def test_a_misspelt_disabled_plugin_name_warns_and_suggests_the_plugin(tmp_path):
    """HEADWATER_DISABLE_PLUGINS=console_logs (a typo) warns at load, naming the unknown
    name and the plugin probably meant; the plugin stays loaded."""
    env = env_for(tmp_path, HEADWATER_DISABLE_PLUGINS="console_logs")
    with Session(env=env) as session:
        with pytest.warns(UserWarning, match=r"'console_logs'.*did you mean 'console_log'\?"):
            session.pm
        assert record(session, "console_log").status == "loaded"


def test_a_misspelt_disabled_plugin_name_in_pyproject_names_the_file(tmp_path):
    """The same typo under [tool.headwater] names the pyproject file, not an environment
    variable the user never set."""
    from headwater.settings import Settings

    write(tmp_path / "pyproject.toml", '[tool.headwater]\ndisable_plugins = ["run_namign"]\n')
    settings = Settings.load(env_for(tmp_path), start=tmp_path)
    with Session(settings=settings) as session:
        with pytest.warns(UserWarning) as record:
            session.pm
    message = str(record[0].message)
    assert f"disable_plugins under [tool.headwater] in {tmp_path / 'pyproject.toml'}" in message
    assert "did you mean 'run_naming'?" in message


def test_valid_disabled_plugin_names_do_not_warn(tmp_path, recwarn):
    """Plugin names, module names and hook-file paths in HEADWATER_DISABLE_PLUGINS are
    accepted without a warning."""
    blocked = "run_naming,headwater.plugins.input_hash,sub/headwater_hooks.py"
    with Session(env=env_for(tmp_path, HEADWATER_DISABLE_PLUGINS=blocked)) as session:
        session.pm
    assert not [w for w in recwarn if "HEADWATER_DISABLE_PLUGINS" in str(w.message)]


# -- local hook files ---------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root (has pyproject.toml) inside a directory that has its own hook file,
    which must never apply: it sits above the project root."""
    naming_plugin(tmp_path / "headwater_hooks.py", "from-outside-the-project")
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "[project]\nname = 'demo'\n")
    naming_plugin(root / "headwater_hooks.py", "from-root")
    naming_plugin(root / "sub" / "headwater_hooks.py", "from-sub")
    return root


def test_nearer_hook_files_win_and_apply_only_at_or_below_their_directory(tmp_path, project):
    """A flow in sub/ is named by sub/headwater_hooks.py (nearer wins); a flow at the root
    or in a sibling directory is named by the root file, even after sub/'s file loaded;
    the file above the project root is never used."""
    in_sub = load_flow(project / "sub" / "deeper" / "flows.py", "in_sub")
    at_root = load_flow(project / "flows.py", "at_root")
    in_other = load_flow(project / "other" / "flows.py", "in_other")
    with Session(env=env_for(tmp_path)) as session:
        assert in_sub() == "from-sub"
        assert at_root() == "from-root"
        assert in_other() == "from-root"
        assert in_sub() == "from-sub"
        local = [r.name for r in session.records if r.source == "local"]
    assert local == [str(project / "headwater_hooks.py"), str(project / "sub" / "headwater_hooks.py")]


def test_session_plugins_still_win_after_local_files_load_and_are_configured_once(tmp_path, project):
    """Session(plugins=[...]) is called before local hook files that load later, and its
    historic headwater_configure is not replayed when they do."""
    configured = []

    class Api:
        @hookimpl
        def headwater_configure(self, session):
            configured.append(session)

        @hookimpl
        def headwater_flow_run_name(self, flow, parameters):
            return "from-api"

    in_sub = load_flow(project / "sub" / "flows.py", "in_sub")
    at_root = load_flow(project / "flows.py", "at_root")
    with Session(env=env_for(tmp_path), plugins=[Api()]) as session:
        assert at_root() == "from-api"
        assert in_sub() == "from-api"
        assert configured == [session]
        assert session.records[-1].source == "api"


def test_a_local_hook_file_is_configured_and_may_register_components(tmp_path):
    """A headwater_hooks.py file receives headwater_configure when it loads, and the
    components it registers are usable by flows beside it."""
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "")
    write(root / "headwater_hooks.py", """
        from headwater.plugins.sequential_runner import SequentialTaskRunner
        configured = []

        class InlineRunner(SequentialTaskRunner):
            pass

        def headwater_configure(session):
            configured.append(session)

        def headwater_register_components(registry):
            registry.add_task_runner("inline", InlineRunner)
    """)
    write(root / "flows.py", """
        from headwater import flow

        @flow(task_runner="inline")
        def uses_inline():
            return "ran"
    """)
    spec = importlib.util.spec_from_file_location("hw_inline_flows", root / "flows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Session(env=env_for(tmp_path)) as session:
        assert module.uses_inline() == "ran"
        hooks = session.pm.get_plugin(str(root / "headwater_hooks.py"))
        assert hooks.configured == [session]
        sources = {name: source for name, _, source in session.registry.items("task_runner")}
        assert sources["inline"] == str(root / "headwater_hooks.py")


def test_a_local_hook_file_can_be_blocked_by_its_path(tmp_path, project):
    """HEADWATER_DISABLE_PLUGINS accepts a hook file's path relative to the project
    root; the blocked file is listed as blocked and its hooks are not used."""
    in_sub = load_flow(project / "sub" / "flows.py", "in_sub")
    env = env_for(tmp_path, HEADWATER_DISABLE_PLUGINS="sub/headwater_hooks.py")
    with Session(env=env) as session:
        assert in_sub() == "from-root"
        assert record(session, str(project / "sub" / "headwater_hooks.py")).status == "blocked"


# -- bad plugins ----------------------------------------------------------------------------


def test_an_unknown_hook_in_a_local_file_names_the_hook_and_the_file(tmp_path):
    """A typo'd hook name in headwater_hooks.py fails the run with an error naming the
    misspelt hook, the file and the hook it probably meant."""
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "")
    hook_file = write(root / "headwater_hooks.py", """
        def headwater_flow_run_nmae(flow, parameters):
            return "typo"
    """)
    probe = load_flow(root / "flows.py", "probe")
    with Session(env=env_for(tmp_path)):
        with pytest.raises(PluginError) as info:
            probe()
    message = str(info.value)
    assert "'headwater_flow_run_nmae'" in message
    assert str(hook_file) in message
    assert "did you mean 'headwater_flow_run_name'" in message


def test_an_unknown_hook_in_a_plugin_module_names_the_hook_and_the_file(tmp_path, site):
    """The same check applies to HEADWATER_PLUGINS modules: the error names the module's
    file and where the plugin was requested."""
    path = write(site / "hwtest_typo.py", "def headwater_task_run_nam(task, parameters):\n    return 'x'\n")
    with Session(env=env_for(tmp_path, HEADWATER_PLUGINS="hwtest_typo")) as session:
        with pytest.raises(PluginError) as info:
            session.pm
    assert "'headwater_task_run_nam'" in str(info.value)
    assert str(path) in str(info.value)
    assert "HEADWATER_PLUGINS" in str(info.value)


def test_hookwrapper_true_is_rejected_with_a_pointer_to_wrapper_true(tmp_path):
    """Old-style hookwrapper=True implementations are refused; the message says to use
    wrapper=True instead."""

    class OldStyle:
        @hookimpl(hookwrapper=True)
        def headwater_flow_run_call(self, flow_run):
            yield

    with Session(env=env_for(tmp_path), plugins=[OldStyle()]) as session:
        with pytest.raises(PluginError, match=r"hookwrapper=True.*wrapper=True"):
            session.pm


def test_a_plugin_that_fails_to_import_is_reported_with_its_name_and_source(tmp_path, site):
    """A strict session (used for runs) refuses to run with a broken plugin and names it
    and where it came from; a non-strict one (used by `headwater plugins`) records the
    error and loads everything else."""
    write(site / "hwtest_broken.py", "import a_module_that_does_not_exist_hw\n")
    env = env_for(tmp_path, HEADWATER_PLUGINS="hwtest_broken")
    probe = load_flow(tmp_path / "flows" / "probe.py", "probe")
    with Session(env=env):
        with pytest.raises(PluginError) as info:
            probe()
    assert "'hwtest_broken'" in str(info.value)
    assert "HEADWATER_PLUGINS" in str(info.value)
    assert "a_module_that_does_not_exist_hw" in str(info.value)

    with Session(env=env, strict=False) as session:
        session.pm
        broken = record(session, "hwtest_broken")
        assert broken.status.startswith("error: ModuleNotFoundError")
        assert record(session, "run_naming").status == "loaded"
        assert probe()  # the rest works


def test_a_failed_strict_load_keeps_nothing_and_fails_again(tmp_path):
    """After a plugin error, the session is not left half-loaded: the next use fails the
    same way instead of running with unconfigured plugins."""

    class Typo:
        def headwater_configur(self, session):
            pass

    probe = load_flow(tmp_path / "flows" / "probe.py", "probe")
    with Session(env=env_for(tmp_path), plugins=[Typo()]):
        for _ in range(2):
            with pytest.raises(PluginError, match="headwater_configur"):
                probe()


def test_a_plugin_may_add_hooks_that_other_plugins_implement(tmp_path):
    """headwater_addhooks adds hook specifications; implementations of the new hook, in
    the same plugin or a later one, are accepted and callable."""
    import types

    specs = types.ModuleType("hw_extra_specs")
    exec(textwrap.dedent("""
        import pluggy
        hookspec = pluggy.HookspecMarker("headwater")

        @hookspec
        def headwater_extra_greeting(who):
            '''Say hello.'''
    """), specs.__dict__)

    class Adds:
        @hookimpl
        def headwater_addhooks(self, pluginmanager):
            pluginmanager.add_hookspecs(specs)

        @hookimpl
        def headwater_extra_greeting(self, who):
            return f"hello {who} from Adds"

    class Uses:
        @hookimpl
        def headwater_extra_greeting(self, who):
            return f"hello {who} from Uses"

    with Session(env=env_for(tmp_path), plugins=[Uses(), Adds()]) as session:
        assert sorted(session.pm.hook.headwater_extra_greeting(who="you")) == [
            "hello you from Adds", "hello you from Uses"]


# -- one session, one plugin manager ---------------------------------------------------------


def test_plugins_load_lazily_once_per_session_and_sessions_are_isolated(tmp_path):
    """Nothing is loaded when a Session is made; plugins are configured once at the first
    run however many runs follow; a second session has its own plugin manager."""
    calls = []

    class Counter:
        @hookimpl
        def headwater_configure(self, session):
            calls.append(session)

        @hookimpl
        def headwater_flow_run_name(self, flow, parameters):
            return "counted"

    probe = load_flow(tmp_path / "flows" / "probe.py", "probe")
    with Session(env=env_for(tmp_path), plugins=[Counter()]) as first:
        assert calls == []
        assert probe() == "counted"
        assert probe() == "counted"
        assert calls == [first]
    with Session(env=env_for(tmp_path)) as second:
        assert probe() != "counted"
        assert second.pm is not first.pm


def test_a_plugin_name_that_is_taken_is_a_plugin_error_naming_it(tmp_path):
    """Two plugins cannot share a name: the second is refused with a PluginError that
    names it, not a bare ValueError dump of the registry."""

    class Clash:
        __name__ = "run_naming"

    with Session(env=env_for(tmp_path), plugins=[Clash()]) as session:
        with pytest.raises(PluginError, match=r"'run_naming'.*already registered") as info:
            session.pm
    assert "{" not in str(info.value)


def test_a_hook_argument_with_a_wrong_name_says_which_names_the_hook_passes(tmp_path):
    """A hook file whose implementation misnames an argument fails with a message naming
    the hook, the file, the arguments it takes and the ones the hook passes."""
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "")
    hook_file = write(root / "headwater_hooks.py", """
        def headwater_flow_run_name(flow, params):
            return "never"
    """)
    probe = load_flow(root / "flows.py", "probe")
    with Session(env=env_for(tmp_path)):
        with pytest.raises(PluginError) as info:
            probe()
    message = str(info.value)
    assert (f"headwater_flow_run_name in {hook_file} takes (flow, params) but the hook "
            f"passes (flow, parameters)") in message
    assert "rename the argument(s) params" in message


def test_an_unknown_hook_error_lists_the_known_hooks(tmp_path):
    """The unknown-hook error lists the hooks that exist (not a path inside headwater's
    repository that an installed user does not have)."""

    class Typo:
        def headwater_nothing_like_a_hook(self):
            pass

    with Session(env=env_for(tmp_path), plugins=[Typo()]) as session:
        with pytest.raises(PluginError) as info:
            session.pm
    message = str(info.value)
    assert "known hooks: " in message and "headwater_task_run_name" in message
    assert "docs/hooks.md" not in message
