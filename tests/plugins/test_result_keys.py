"""Which results are persisted, and under which key, is the policy's answer
(``result_key``): the caching plugin names cache keys, local_results ``persist_result``,
and a plugin can name its own."""

from __future__ import annotations

from headwater import Session, flow, hookimpl, task
from headwater.policy import WrappingPolicy
from headwater.results import MemoryResultStore
from headwater.tasks import task_input_hash

stores: list[MemoryResultStore] = []


class InMemoryResults:
    @hookimpl(tryfirst=True)
    def headwater_make_result_store(self, flow, session):
        store = MemoryResultStore()
        stores.append(store)
        return store


@task(persist_result=True)
def kept(x):
    return x * 2


@task
def inherits(x):
    return x * 3


@task(persist_result=False)
def never(x):
    return x * 4


@task(cache_key_fn=task_input_hash, persist_result=True)
def cached(x):
    return x * 5


@flow(persist_result=True)
def persisting():
    return [kept(1), inherits(1), never(1), cached(1)]


def _keys(store):
    return sorted(key.split("-")[0] for key in store.data)


def test_persist_result_and_cache_keys_name_the_stored_results(headwater_home):
    stores.clear()
    with Session(plugins=[InMemoryResults()]) as session:
        assert persisting() == [2, 3, 4, 5]
        session.store.flush()
        runs = {r.task_name: r for r in session.store.read_task_runs()}
    (store,) = stores
    # kept and inherits under run-<id>, cached under cache-<key>, never not at all; the
    # flow persisting results keeps its parameters too (flow-run-<id>-parameters: a retry's)
    assert _keys(store) == ["cache", "flow", "run", "run"]
    assert runs["never"].result_location is None
    assert runs["cached"].result_location is not None
    assert store.read(runs["kept"].result_location) == 2


class ByTaskName(WrappingPolicy):
    def result_key(self, ctx):
        return f"latest-{ctx.task.name}"


class LatestResults:
    @hookimpl(wrapper=True)
    def headwater_make_state_policy(self, task, session):
        return ByTaskName((yield))


@flow
def reports():
    return never(2)


def test_a_plugin_policy_names_the_key_of_any_result(headwater_home):
    stores.clear()
    with Session(plugins=[InMemoryResults(), LatestResults()]):
        assert reports() == 8
    (store,) = stores
    assert list(store.data) == ["latest-never"]


class NumberKeys(WrappingPolicy):
    def result_key(self, ctx):
        return 42


class NumberedResults:
    @hookimpl(wrapper=True)
    def headwater_make_state_policy(self, task, session):
        return NumberKeys((yield))


def test_a_result_key_that_is_not_a_string_fails_the_run_naming_the_policy(headwater_home):
    stores.clear()
    with Session(plugins=[InMemoryResults(), NumberedResults()]) as session:
        state = reports(return_state=True)
        session.store.flush()
        (run,) = session.store.read_task_runs(flow_run_id=state.state_details.flow_run_id)
    assert state.is_failed()
    assert all(store.data == {} for store in stores)  # nothing written under a bad key
    assert run.state.is_failed()
    assert "NumberKeys answered result_key() with 42" in run.state.message
