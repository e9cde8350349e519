"""Flow retries are a state policy's answer, as task retries are: the retries plugin's
by default, replaceable through headwater_make_flow_state_policy."""

from __future__ import annotations

from headwater import Session, flow, hookimpl
from headwater.plugins.retries import RetryPolicy
from headwater.policy import StatePolicy
from headwater.states import StateType

calls: list[str] = []


@flow(retries=3, retry_delay_seconds=0)
def fetch(kind: str):
    calls.append(kind)
    if len(calls) < 3:
        raise (ConnectionError if kind == "network" else ValueError)(f"{kind} failed")
    return len(calls)


class OnlyNetworkErrors(RetryPolicy):
    """Retry a flow only when it lost the network."""

    def propose_failed(self, ctx, exc, state):
        if not isinstance(exc, ConnectionError):
            return state
        return super().propose_failed(ctx, exc, state)


class NetworkRetries:
    @hookimpl(tryfirst=True)
    def headwater_make_flow_state_policy(self, flow, session):
        return OnlyNetworkErrors(flow)


def test_the_default_policy_retries_a_failed_flow_run(headwater_home):
    calls.clear()
    with Session() as session:
        assert fetch("disk") == 3
        session.store.flush()
        (run,) = session.store.read_flow_runs()
        names = [s.name for s in session.store.read_states(run.id)]
    assert names.count("AwaitingRetry") == 2 and names[-1] == "Completed"


def test_a_plugin_policy_decides_which_failures_retry_a_flow(headwater_home):
    with Session(plugins=[NetworkRetries()]):
        calls.clear()
        assert fetch("network") == 3  # retried twice
        calls.clear()
        state = fetch("disk", return_state=True)
        assert state.type is StateType.FAILED and calls == ["disk"]  # not retried


class Garbage(StatePolicy):
    def propose_failed(self, ctx, exc, state):
        return None


class GarbagePolicy:
    @hookimpl(tryfirst=True)
    def headwater_make_flow_state_policy(self, flow, session):
        return Garbage()


def test_a_flow_policy_answer_the_engine_cannot_act_on_fails_the_run_naming_it(headwater_home):
    calls.clear()
    with Session(plugins=[GarbagePolicy()]):
        state = fetch("disk", return_state=True)
    assert state.type is StateType.FAILED and calls == ["disk"]
    assert "test_flow_retries.Garbage answered propose_failed() with None for flow run" in state.message


class BrokenHook:
    @hookimpl(tryfirst=True)
    def headwater_make_flow_state_policy(self, flow, session):
        raise RuntimeError("policy service down")


def test_a_flow_policy_hook_that_raises_fails_the_run_and_the_state_is_returned(headwater_home):
    calls.clear()
    with Session(plugins=[BrokenHook()]):
        state = fetch("disk", return_state=True)  # returned, not raised
    assert state.type is StateType.FAILED and calls == ["disk"]
    assert "policy service down" in state.message


def test_without_a_flow_policy_a_flow_with_retries_says_they_do_not_apply(headwater_home, caplog):
    calls.clear()
    with Session(env={"HEADWATER_DISABLE_PLUGINS": "retries"}):
        state = fetch("disk", return_state=True)
    assert state.type is StateType.FAILED and calls == ["disk"]
    assert any("retries=3 of flow 'fetch' do not apply" in r.getMessage() for r in caplog.records)


class BeyondTheOption(RetryPolicy):
    def __init__(self, flow):
        super().__init__(flow)
        self.retries = 5


class GenerousRetries:
    @hookimpl(tryfirst=True)
    def headwater_make_flow_state_policy(self, flow, session):
        return BeyondTheOption(flow)


@flow(retries=1, retry_delay_seconds=0)
def stubborn():
    calls.append("x")
    if len(calls) < 3:
        raise ValueError("not yet")
    return "done"


def test_retries_beyond_the_option_are_counted_without_an_impossible_total(headwater_home, caplog):
    calls.clear()
    with Session(plugins=[GenerousRetries()]):
        assert stubborn() == "done"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Retry ")]
    assert lines[0].startswith("Retry 1/1 ") and lines[1].startswith("Retry 2 will"), lines
