"""headwater-postgres: the run store on a real PostgreSQL server (the tests' own, on
loopback: ``pg_server.py``), used as users use it, through ``HEADWATER_DATABASE_URL``,
from processes with homes of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from headwater.errors import StoreError

pytest.importorskip("headwater_postgres")
from headwater_postgres.schema import SCHEMA_VERSION  # noqa: E402
from headwater_postgres.store import PostgresRunStore  # noqa: E402

HEADWATER = [sys.executable, "-m", "headwater.cli"]


def clean_env(home: Path, url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(home)
    if url is not None:
        env["HEADWATER_DATABASE_URL"] = url
    env.update(extra)
    return env


def run(argv: list[str], home: Path, url: str | None, cwd: Path, timeout: float = 120,
        **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=clean_env(home, url, **extra), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def pg_session(postgres_url, tmp_path):
    """An active session recording into the test's database; closed before the database
    is dropped (an open connection would hold the drop up)."""
    from headwater.session import Session

    with Session(env={"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_DATABASE_URL": postgres_url}) as session:
        yield session


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


PIPELINE = """
    import sys
    from headwater import flow, task, get_run_logger
    from headwater.tasks import task_input_hash

    @task(cache_key_fn=task_input_hash)
    def square(x):
        return x * x

    @task
    def total(values):
        get_run_logger().info("summing %d values", len(values))
        return sum(values)

    @flow
    def squares(n: int = 4):
        futures = [square.submit(i) for i in range(n)]
        return total([f.result() for f in futures])

    if __name__ == "__main__":
        print(squares(int(sys.argv[1]) if len(sys.argv) > 1 else 4))
"""


def test_every_command_reads_the_runs_of_another_home_from_the_database(postgres_url, tmp_path):
    """A flow run from one home; `headwater runs`, `runs show`, `runs logs` and `cache ls`
    from another see it, and a second run from a third home gets its cached tasks."""
    script = write_script(tmp_path, "squares.py", PIPELINE)
    shared = dict(HEADWATER_RESULT_STORAGE=str(tmp_path / "results"))  # where cached results are
    first = run([sys.executable, str(script)], tmp_path / "a", postgres_url, tmp_path, **shared)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "14"

    listed = run([*HEADWATER, "runs", "--json"], tmp_path / "b", postgres_url, tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["flow_name"], r["state_name"]) for r in runs] == [("squares", "Completed")]
    name = runs[0]["name"]
    shown = run([*HEADWATER, "runs", "show", name], tmp_path / "b", postgres_url, tmp_path)
    assert shown.returncode == 0 and "Task runs (5)" in shown.stdout, shown.stdout + shown.stderr
    logs = run([*HEADWATER, "runs", "logs", name], tmp_path / "b", postgres_url, tmp_path)
    assert "summing 4 values" in logs.stdout
    cached = run([*HEADWATER, "cache", "ls"], tmp_path / "b", postgres_url, tmp_path)
    assert cached.stdout.count("square") == 4

    again = run([sys.executable, str(script)], tmp_path / "c", postgres_url, tmp_path, **shared)
    assert again.returncode == 0, again.stderr
    store = PostgresRunStore(postgres_url)
    try:
        newest = store.read_flow_runs(limit=1)[0]
        states = sorted(t.state.name for t in store.read_task_runs(newest.id) if t.task_name == "square")
        assert states == ["Cached"] * 4
    finally:
        store.close()
    assert not (tmp_path / "b" / "headwater.db").exists()  # no SQLite file was made instead


def test_the_flow_run_row_is_durable_before_the_body_and_every_state_when_the_call_returns(postgres_url,
                                                                                          pg_session):
    from headwater import flow, task
    from headwater.runtime import flow_run

    seen_in_body: list[tuple] = []

    def rows_of(run_id: str) -> list[tuple]:
        with psycopg.connect(postgres_url) as conn:  # a connection of its own: committed rows only
            return conn.execute("SELECT name FROM headwater.flow_runs WHERE id = %s", (run_id,)).fetchall()

    @task
    def step(x):
        return x + 1

    @flow
    def durable():
        seen_in_body.extend(rows_of(flow_run.id))
        return [step(i) for i in range(50)]

    state = durable(return_state=True)
    with psycopg.connect(postgres_url) as conn:
        run_id = conn.execute("SELECT id FROM headwater.flow_runs").fetchone()[0]
        flow_states = conn.execute("SELECT name FROM headwater.states WHERE run_id = %s ORDER BY seq",
                                   (run_id,)).fetchall()
        task_states = conn.execute("SELECT count(*) FROM headwater.states s JOIN headwater.task_runs t "
                                   "ON s.run_id = t.id WHERE t.flow_run_id = %s", (run_id,)).fetchone()[0]
        completed = conn.execute("SELECT count(*) FROM headwater.task_runs WHERE flow_run_id = %s "
                                 "AND state_type = 'COMPLETED'", (run_id,)).fetchone()[0]
    assert state.is_completed()
    assert len(seen_in_body) == 1
    assert [s for (s,) in flow_states] == ["Pending", "Running", "Completed"]
    assert (task_states, completed) == (150, 50)


def test_the_schema_is_made_on_first_use_by_many_processes_at_once(postgres_url, tmp_path):
    opener = "from headwater_postgres.store import PostgresRunStore\nPostgresRunStore(__import__('sys').argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", opener, postgres_url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM headwater.schema_version").fetchall()
        tables = {t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'headwater'")}
    assert versions == [(SCHEMA_VERSION,)]
    assert {"flow_runs", "task_runs", "states", "logs", "cache_entries", "flows"} <= tables


def test_a_database_of_a_newer_schema_is_refused_and_left_untouched(postgres_url):
    PostgresRunStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE headwater.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
        conn.execute("ALTER TABLE headwater.flow_runs ADD COLUMN from_the_future TEXT")
    with pytest.raises(StoreError) as caught:
        PostgresRunStore(postgres_url)
    message = str(caught.value)
    assert "newer headwater-postgres" in message and f"schema {SCHEMA_VERSION + 1}" in message
    assert "\n" not in message
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM headwater.schema_version").fetchone() == (SCHEMA_VERSION + 1,)


def test_tables_of_another_program_are_left_alone_and_another_schema_can_be_named(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA headwater")
        conn.execute("CREATE TABLE headwater.invoices (id int)")
    with pytest.raises(StoreError, match="not headwater's \\(invoices\\).*left untouched"):
        PostgresRunStore(postgres_url)
    store = PostgresRunStore(postgres_url + "?schema=hw_team")
    store.close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM headwater.invoices").fetchone() == (0,)
        assert conn.execute("SELECT version FROM hw_team.schema_version").fetchone() == (SCHEMA_VERSION,)


def test_a_server_that_cannot_be_reached_is_one_line_naming_it_without_the_password(tmp_path):
    from pg_server import free_port

    url = f"postgresql://team:s3cret@127.0.0.1:{free_port()}/history"
    done = run([*HEADWATER, "runs"], tmp_path / "home", url, tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot connect to the PostgreSQL run store" in lines[0] and "127.0.0.1" in lines[0]
    assert "s3cret" not in done.stderr and "team:***@" in lines[0]


def test_without_the_plugin_the_url_names_the_package_to_install(tmp_path):
    done = run([*HEADWATER, "runs"], tmp_path / "home", "postgresql://u@127.0.0.1:1/db", tmp_path,
               HEADWATER_DISABLE_PLUGINS="postgres")
    assert done.returncode == 1
    assert "no installed plugin serves postgresql://" in done.stderr
    assert "pip install headwater-postgres" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_text_postgresql_cannot_hold_is_written_escaped_and_nothing_else_is_lost(pg_session):
    from headwater import flow, get_run_logger, get_store, task

    @task
    def echo(text):
        get_run_logger().info("got %s", text)
        return len(text)

    @flow
    def odd(texts):
        return [echo(t) for t in texts]

    texts = ["nul\x00inside", "lone \udcff surrogate", "emoji \U0001f30a", "plain"]
    assert odd(texts) == [len(t) for t in texts]
    store = get_store()
    run = store.read_flow_runs(limit=1)[0]
    tasks = store.read_task_runs(run.id)
    assert [t.state.name for t in tasks] == ["Completed"] * 4
    messages = [line["message"] for line in store.read_logs(run.id, limit=10_000)
                if line["message"] and line["message"].startswith("got ")]
    assert messages == ["got nul\\x00inside", "got lone \\udcff surrogate", "got emoji \U0001f30a", "got plain"]
    assert run.parameters["texts"] == texts[:1] + ["lone \\udcff surrogate"] + texts[2:]  # JSON keeps NUL


HANGS = """
    import pathlib, sys, time
    from headwater import flow, task

    @task
    def slow(marker):
        pathlib.Path(marker).write_text("started")
        time.sleep(600)

    @flow
    def stuck(marker: str):
        slow(marker)

    if __name__ == "__main__":
        stuck(sys.argv[1])
"""


def test_a_killed_flow_process_is_shown_crashed_once_its_heartbeats_stop(postgres_url, tmp_path):
    script = write_script(tmp_path, "stuck.py", HANGS)
    marker = tmp_path / "started"
    env = clean_env(tmp_path / "worker", postgres_url, HEADWATER_HEARTBEAT_SECONDS="0.25")
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the flow did not start its task"
            time.sleep(0.05)
        reader = PostgresRunStore(postgres_url, heartbeat_seconds=0.25)  # threshold: 6 x 0.25 s
        try:
            time.sleep(3.0)  # twice the threshold: alive all along, by its heartbeats
            run = reader.read_flow_runs(limit=1)[0]
            assert run.state.name == "Running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed = time.time()
            while True:
                run = reader.read_flow_runs(limit=1)[0]
                if run.state.name == "Crashed" or time.time() - killed > 20:
                    break
                time.sleep(0.1)
            assert run.state.name == "Crashed"
            assert time.time() - killed >= 1.0  # shown so by the threshold, not at once by a pid
            assert "sent no heartbeat" in run.state.message
            assert [t.state.name for t in reader.read_task_runs(run.id)] == ["Crashed"]
            assert reader.read_states(run.id)[-1].name == "Crashed"
        finally:
            reader.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


RETRIED = """
    import pathlib, sys, time
    from headwater import flow, task

    HERE = pathlib.Path(__file__).parent

    @task
    def fetch(i):
        with open(HERE / "calls.log", "a") as log:
            log.write(f"fetch {i}\\n")
        return i

    @task
    def publish(values):
        with open(HERE / "calls.log", "a") as log:
            log.write("publish\\n")
        if (HERE / "hold").exists():
            (HERE / "holding").write_text("yes")
            time.sleep(600)
        if not (HERE / "fixed").exists():
            raise RuntimeError("the printer is out of paper")
        return sum(values)

    @flow(persist_result=True)
    def report():
        return publish([fetch(i) for i in range(3)])

    if __name__ == "__main__":
        report()
"""


def test_a_failed_run_is_retried_from_where_it_failed_and_a_second_retry_meanwhile_is_refused(postgres_url,
                                                                                                tmp_path):
    script = write_script(tmp_path, "report.py", RETRIED)
    shared = dict(HEADWATER_RESULT_STORAGE=str(tmp_path / "results"), HEADWATER_HEARTBEAT_SECONDS="0.25")
    first = run([sys.executable, str(script)], tmp_path / "a", postgres_url, tmp_path, **shared)
    assert first.returncode == 1 and "out of paper" in first.stderr
    store = PostgresRunStore(postgres_url)
    try:
        failed = store.read_flow_runs(limit=1)[0]
    finally:
        store.close()
    assert failed.state.name == "Failed"

    (tmp_path / "hold").write_text("")
    (tmp_path / "fixed").write_text("")
    holder = subprocess.Popen([*HEADWATER, "runs", "retry", failed.name],
                              env=clean_env(tmp_path / "b", postgres_url, **shared), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "holding").exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[1]
            time.sleep(0.05)
        second = run([*HEADWATER, "runs", "retry", failed.id], tmp_path / "c", postgres_url, tmp_path, **shared)
        assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1
        assert "is Retrying, not failed" in second.stderr
    finally:
        holder.kill()
        holder.wait(10)

    # The killed retry's run is shown Crashed once its heartbeats stop (6 x 0.25 s), and
    # a Crashed run can be retried again.
    (tmp_path / "hold").unlink()
    (tmp_path / "calls.log").write_text("")
    reader = PostgresRunStore(postgres_url, heartbeat_seconds=0.25)
    try:
        deadline = time.monotonic() + 30
        while reader.read_flow_run(failed.id).state.name != "Crashed":
            assert time.monotonic() < deadline, reader.read_flow_run(failed.id).state
            time.sleep(0.1)
    finally:
        reader.close()
    third = run([*HEADWATER, "runs", "retry", failed.id], tmp_path / "d", postgres_url, tmp_path, **shared)
    assert third.returncode == 0, third.stderr
    store = PostgresRunStore(postgres_url)
    try:
        history = [s.name for s in store.read_states(failed.id)]
    finally:
        store.close()
    # The killed attempt's end is in the history, as the reads showed it: Crashed.
    assert history[history.index("Crashed") - 1:][:3] == ["Retrying", "Crashed", "AwaitingRetry"], history
    assert (tmp_path / "calls.log").read_text().split("\n")[:-1] == ["publish"]
    store = PostgresRunStore(postgres_url)
    try:
        retried = store.read_flow_run(failed.id)
        assert retried.state.name == "Completed" and retried.run_count >= 2
    finally:
        store.close()


def test_runs_are_deleted_with_their_subflow_runs(postgres_url, tmp_path):
    script = write_script(tmp_path, "nested.py", """
        from headwater import flow, task

        @task
        def leaf(x):
            return x

        @flow
        def inner(x):
            return leaf(x)

        @flow
        def outer():
            return [inner(i) for i in range(2)]

        if __name__ == "__main__":
            outer()
            outer()
    """)
    assert run([sys.executable, str(script)], tmp_path / "a", postgres_url, tmp_path).returncode == 0
    store = PostgresRunStore(postgres_url)
    try:
        first_outer = [r for r in store.read_flow_runs(limit=10) if r.flow_name == "outer"][-1]
        done = run([*HEADWATER, "runs", "delete", first_outer.id, "--yes"], tmp_path / "b", postgres_url, tmp_path)
        assert done.returncode == 0, done.stderr
        left = store.read_flow_runs(limit=10)
        assert sorted(r.flow_name for r in left) == ["inner", "inner", "outer"]
        assert first_outer.id not in {r.parent_flow_run_id for r in left}
        assert store.read_states(first_outer.id) == []
    finally:
        store.close()


def test_a_run_claimed_by_a_live_process_elsewhere_cannot_be_reopened(postgres_url, tmp_path):
    """The store's own claim check (what stops two retries started at the same moment,
    after both passed the command's check): the row is locked and judged by heartbeat."""
    from headwater.runs import FlowRun
    from headwater.states import State, StateType

    store = PostgresRunStore(postgres_url)
    try:
        run = FlowRun("00000000-0000-0000-0000-00000000c1a1", "claimed", "claimed-run", {}, frozenset())
        store.create_flow_run(run)
        run.state = State(StateType.FAILED, "Failed")
        store.record_state(run, run.state)
        store.flush()
        claimer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from headwater_postgres.store import PostgresRunStore
            from headwater.states import State, StateType
            store = PostgresRunStore({postgres_url!r}, heartbeat_seconds=0.25)
            run = store.read_flow_run("claimed-run")
            run.run_count = 2
            store.reopen_flow_run(run, State(StateType.RUNNING, "Retrying"))
            print("claimed", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
        try:
            assert claimer.stdout.readline().strip() == "claimed"
            reader = PostgresRunStore(postgres_url, heartbeat_seconds=0.25)
            try:
                with pytest.raises(StoreError, match="is being run by process"):
                    reader.reopen_flow_run(reader.read_flow_run(run.id), State(StateType.RUNNING, "Retrying"))
            finally:
                reader.close()
        finally:
            claimer.kill()
            claimer.wait(10)
        assert [s.name for s in store.read_states(run.id)] == ["Failed", "Retrying"]
    finally:
        store.close()


def test_no_command_or_page_shows_the_password(postgres_url, tmp_path):
    """The tests' server trusts loopback, so any password gets in: what matters is that
    none is shown, by `headwater runs` on an empty store or by the dashboard."""
    url = postgres_url.replace("://headwater@", "://headwater:hunter2@")
    empty = run([*HEADWATER, "runs"], tmp_path / "home", url, tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert "No flow runs recorded in postgresql://headwater:***@127.0.0.1" in empty.stdout
    assert "hunter2" not in empty.stdout + empty.stderr

    from headwater.plugins.dashboard.server import StoreSource
    from headwater.session import Session

    with Session(env={"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_DATABASE_URL": url}) as session:
        assert "hunter2" not in StoreSource(session).description


def test_a_forked_child_writes_its_own_runs_and_leaves_the_parents_connections_alone(pg_session):
    """A child forked after the store opened (multiprocessing's default on Linux) opens its
    own pool; the parent's connections keep working after the child exits."""
    from headwater import flow, get_store

    @flow
    def where(tag: str) -> int:
        return os.getpid()

    parent_pid = where("parent")
    pid = os.fork()
    if pid == 0:  # the child: a flow of its own, then out without running the parent's cleanup
        code = 0
        try:
            where("child")
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert where("parent again") == parent_pid
    runs = get_store().read_flow_runs(limit=10)
    assert sorted(r.parameters["tag"] for r in runs) == ["child", "parent", "parent again"]
    assert all(r.state.name == "Completed" for r in runs)


def test_an_older_schema_is_migrated_on_first_use_all_or_nothing(postgres_url, monkeypatch):
    """A later headwater-postgres adds a step to ``MIGRATIONS``: a database of the older
    version is brought up to it when first opened, keeping its runs; a step that fails
    leaves the database as it was."""
    from headwater_postgres import schema

    store = PostgresRunStore(postgres_url)
    from headwater.runs import FlowRun

    store.create_flow_run(FlowRun("00000000-0000-0000-0000-0000000000a1", "kept", "kept-run", {"x": 1},
                                  frozenset()))
    store.close()

    broken = schema.MIGRATIONS + [("ALTER TABLE flow_runs ADD COLUMN half_done TEXT", "SELECT no_such_function()")]
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(broken))
    with pytest.raises(StoreError, match="cannot be used: .*no_such_function.*left untouched"):
        PostgresRunStore(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM headwater.schema_version").fetchone() == (SCHEMA_VERSION,)
        columns = {c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns "
                                               "WHERE table_schema = 'headwater' AND table_name = 'flow_runs'")}
    assert "half_done" not in columns

    later = broken[:-1] + [("ALTER TABLE flow_runs ADD COLUMN note TEXT",)]
    monkeypatch.setattr(schema, "MIGRATIONS", later)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(later))
    store = PostgresRunStore(postgres_url)
    try:
        assert store.read_flow_run("kept-run").parameters == {"x": 1}
    finally:
        store.close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM headwater.schema_version").fetchone() == (len(later),)
        assert conn.execute("SELECT note FROM headwater.flow_runs").fetchall() == [(None,)]


SLOW = """
    import sys, time
    from headwater import flow, task

    @task
    def tick(i):
        time.sleep(0.3)
        return i

    @flow
    def ticking(n: int):
        return sum(tick(i) for i in range(n))

    if __name__ == "__main__":
        print(ticking(int(sys.argv[1])))
"""


def test_a_flow_goes_on_through_a_restart_of_the_server_and_loses_nothing(postgres_server, tmp_path):
    """The server is restarted (every session ended) while a flow runs: the flow waits
    for it and finishes, and its whole history is recorded."""
    from pg_server import PostgresServer

    server = PostgresServer(postgres_server.bindir).start()
    try:
        url = server.create_database()
        script = write_script(tmp_path, "ticking.py", SLOW)
        proc = subprocess.Popen([sys.executable, str(script), "12"], env=clean_env(tmp_path / "a", url),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # a few tasks in
        server.restart()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == str(sum(range(12)))
        assert "Traceback" not in err and "error connecting" not in err
        store = PostgresRunStore(url)
        try:
            (flow_run,) = store.read_flow_runs()
            tasks = store.read_task_runs(flow_run.id)
            assert flow_run.state.name == "Completed"
            assert [t.state.name for t in tasks] == ["Completed"] * 12
            assert all([s.name for s in store.read_states(t.id)] == ["Pending", "Running", "Completed"]
                       for t in tasks)
        finally:
            store.close()
    finally:
        server.stop()


def test_every_reader_judges_a_process_by_the_heartbeat_it_keeps(postgres_url, tmp_path):
    """A flow process beating every 2 s is alive to a reader whose own setting is 0.1 s
    (it would take 0.6 s of silence for death): the writer's pace is recorded with its runs."""
    script = write_script(tmp_path, "stuck.py", HANGS)
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(script), str(marker)],
                            env=clean_env(tmp_path / "a", postgres_url, HEADWATER_HEARTBEAT_SECONDS="2"),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        impatient = PostgresRunStore(postgres_url, heartbeat_seconds=0.1)
        try:
            time.sleep(3.0)
            assert impatient.read_flow_runs()[0].state.name == "Running"
            assert impatient.read_flow_runs(state="crashed") == []
        finally:
            impatient.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_a_schema_of_other_tables_is_refused_whatever_the_role_may_see(postgres_url):
    """Tables the connecting role has no rights on still make the schema not headwater's;
    and a role that owns its schema needs no right to create schemas in the database."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE team_member LOGIN")
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.customers (id int)")
        conn.execute("GRANT USAGE ON SCHEMA other TO team_member")
        conn.execute("CREATE SCHEMA team AUTHORIZATION team_member")
        conn.execute("REVOKE CREATE ON DATABASE " + postgres_url.rsplit("/", 1)[1] + " FROM PUBLIC")
    as_member = postgres_url.replace("://headwater@", "://team_member@")
    with pytest.raises(StoreError, match="not headwater's \\(customers\\)"):
        PostgresRunStore(as_member + "?schema=other")
    PostgresRunStore(as_member + "?schema=team").close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM team.schema_version").fetchone() == (SCHEMA_VERSION,)


def test_every_libpq_url_form_works_and_a_bad_one_is_one_line(postgres_server, postgres_url, tmp_path):
    database = postgres_url.rsplit("/", 1)[1]
    by_socket = f"postgresql:///{database}?host={postgres_server.socket_dir}&port={postgres_server.port}" \
                f"&user=headwater&schema=via_socket"
    PostgresRunStore(by_socket).close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM via_socket.schema_version").fetchone() == (SCHEMA_VERSION,)
    for bad in ("postgresql://u:pw@127.0.0.1:notaport/db", "postgresql://u:pw@127.0.0.1:99999/db"):
        done = run([*HEADWATER, "runs"], tmp_path / "home", bad, tmp_path)
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and "pw" not in done.stderr.replace("postgresql", "")
