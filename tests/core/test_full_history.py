"""The full state history survives the performance work: a 10,000-task flow on the
default SQLite run store reads back every task run and every one of its transitions,
and the per-task hooks are bound once (no pluggy call per task run with default plugins)."""

from __future__ import annotations

from headwater import flow, task

N = 10_000


@task
def double(x: int) -> int:
    return 2 * x


def test_every_transition_of_a_10000_task_flow_is_read_back(headwater_session):
    """Every one of 10,000 task runs is in the store, in order, with its parameters and
    its whole history Pending → Running → Completed; the flow's own history is whole."""
    seen: dict[str, int] = {}
    calls: list[str] = []

    @flow
    def many() -> int:
        total = 0
        before = len(calls)
        for i in range(N):
            total += double(i)
        seen["pluggy_calls"] = len(calls) - before
        return total

    # Every pluggy call, also those made through the flow's bound hooks.
    undo = headwater_session.pm.add_hookcall_monitoring(
        lambda hook_name, hook_impls, kwargs: calls.append(hook_name),
        lambda outcome, hook_name, hook_impls, kwargs: None,
    )
    try:
        state = many(return_state=True)
    finally:
        undo()
    assert state.is_completed() and state.result() == N * (N - 1)
    store = headwater_session.store
    flow_run = store.read_flow_runs(limit=1)[0]
    assert [s.name for s in store.read_states(flow_run.id)] == ["Pending", "Running", "Completed"]
    task_runs = store.read_task_runs(flow_run_id=flow_run.id)
    assert len(task_runs) == N
    assert [r.parameters["x"] for r in task_runs] == list(range(N))
    assert all(r.state.name == "Completed" and r.run_count == 1 for r in task_runs)
    # One query for all histories: the states table holds every transition of every run.
    conn = store._conn()
    rows = conn.execute(
        "SELECT s.run_id, s.name FROM states s JOIN task_runs t ON t.id = s.run_id "
        "WHERE t.flow_run_id = ? ORDER BY s.seq", (flow_run.id,)).fetchall()
    histories: dict[str, list[str]] = {}
    for run_id, name in rows:
        histories.setdefault(run_id, []).append(name)
    assert set(histories) == {r.id for r in task_runs}
    assert {tuple(h) for h in histories.values()} == {("Pending", "Running", "Completed")}
    # The public read API agrees, run by run (spot check: first, middle, last).
    for run in (task_runs[0], task_runs[N // 2], task_runs[-1]):
        states = store.read_states(run.id)
        assert [s.name for s in states] == ["Pending", "Running", "Completed"]
        assert states[0].ts <= states[1].ts <= states[2].ts
    # The state policy is made once per task per flow run (through pluggy: caching wraps
    # retries); nothing per task run.
    assert seen["pluggy_calls"] <= 1, f"{seen['pluggy_calls']} pluggy calls for {N} task runs"


def test_history_is_durable_when_the_flow_returns(headwater_session):
    """When a flow call returns, its history is already on disk: a second connection
    (as another process would open) sees every state without waiting."""
    import sqlite3

    @flow
    def few() -> None:
        for i in range(500):
            double(i)

    few()
    store = headwater_session.store
    other = sqlite3.connect(store.path)
    try:
        count = other.execute("SELECT count(*) FROM states WHERE run_kind = 'task'").fetchone()[0]
    finally:
        other.close()
    assert count == 500 * 3
