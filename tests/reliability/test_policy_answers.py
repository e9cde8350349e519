"""A state policy's answers: the engine retries, ends or fails a run only in ways the
history can show truthfully. An answer it cannot act on ends the run Failed with an
error naming the policy, never a run left Scheduled whose result() is None."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.context import TaskRunContext
from headwater.errors import ConfigurationError
from headwater.plugins.retries import RetryPolicy
from headwater.policy import StatePolicy
from headwater.states import AwaitingRetry, Completed, Failed, Pending, Running, Scheduled, StateType


def _answering(method: str, answer):
    class OddPolicy(StatePolicy):
        pass

    setattr(OddPolicy, method, lambda self, ctx, *rest: answer() if callable(answer) else answer)

    class Plugin:
        @hookimpl(tryfirst=True)
        def headwater_make_state_policy(self, task, session):
            return OddPolicy()

    return Plugin()


attempts: list[int] = []


@task
def fails():
    attempts.append(1)
    raise ValueError("bad row 7")


@task
def works():
    attempts.append(1)
    return 42


@flow
def runs_fails():
    return fails()


@flow
def runs_works():
    return works()


def _only_task_run(session):
    session.store.flush()
    (run,) = session.store.read_task_runs()
    return run


NOT_ACTIONABLE = {
    "Scheduled()": Scheduled,
    "Pending()": Pending,
    "Running()": Running,
    "None": None,
    "42": 42,
}


@pytest.mark.parametrize("shown", sorted(NOT_ACTIONABLE))
def test_a_failed_attempt_answered_with_a_non_final_state_fails_the_run_naming_the_policy(
        headwater_home, shown):
    with Session(plugins=[_answering("propose_failed", NOT_ACTIONABLE[shown])]) as session:
        state = runs_fails(return_state=True)
        assert state.type is StateType.FAILED
        run = _only_task_run(session)
        assert run.state.type is StateType.FAILED
        assert "OddPolicy" in run.state.message and "propose_failed" in run.state.message
        with pytest.raises(ConfigurationError, match=r"OddPolicy answered propose_failed\(\)"):
            runs_fails()


@pytest.mark.parametrize("shown", ["Scheduled()", "Pending()", "Running()", "42"])
@pytest.mark.parametrize("method", ["propose_running", "propose_completed"])
def test_propose_running_and_propose_completed_answers_are_checked_too(headwater_home, method, shown):
    attempts.clear()
    with Session(plugins=[_answering(method, NOT_ACTIONABLE[shown])]) as session:
        assert runs_works(return_state=True).type is StateType.FAILED
        run = _only_task_run(session)
        assert run.state.type is StateType.FAILED
        assert f"OddPolicy answered {method}()" in run.state.message
    assert len(attempts) == (0 if method == "propose_running" else 1)


def test_propose_completed_answering_none_fails_the_run(headwater_home):
    with Session(plugins=[_answering("propose_completed", None)]) as session:
        with pytest.raises(ConfigurationError, match="answered propose_completed"):
            runs_works()
        assert _only_task_run(session).state.type is StateType.FAILED


def test_awaiting_retry_retries_and_a_scheduled_time_says_when(headwater_home):
    answers = iter([AwaitingRetry(), Scheduled(scheduled_time=dt.datetime.now(dt.timezone.utc))])

    class RetryTwice(StatePolicy):
        def propose_failed(self, ctx, exc, state):
            return next(answers, state)

    class Plugin:
        @hookimpl(tryfirst=True)
        def headwater_make_state_policy(self, task, session):
            return RetryTwice()

    attempts.clear()
    with Session(plugins=[Plugin()]) as session:
        with pytest.raises(ValueError, match="bad row 7"):
            runs_fails()
        assert len(attempts) == 3
        run = _only_task_run(session)
        assert run.state.type is StateType.FAILED and run.run_count == 3


def test_a_policy_may_accept_a_failure_as_completed_and_it_is_logged(headwater_session, caplog):
    with Session(plugins=[_answering("propose_failed", lambda: Completed(data="fallback"))]) as session:
        assert runs_fails() == "fallback"
        assert _only_task_run(session).state.type is StateType.COMPLETED
    assert any("OddPolicy answered the failed attempt with Completed" in r.getMessage()
               for r in caplog.records)


def test_the_context_policies_get_is_declared():
    assert "retries_done" in TaskRunContext.__slots__


def test_retry_policy_works_with_a_plain_fake_context():
    @task(retries=2, retry_delay_seconds=[1, 10])
    def flaky():
        pass

    policy = RetryPolicy(flaky)
    failed = Failed(message="boom")
    first = policy.propose_failed(SimpleNamespace(task=flaky, task_run=None, retries_done=0),
                                  ValueError(), failed)
    assert first.name == "AwaitingRetry"
    second = policy.propose_failed(SimpleNamespace(task=flaky, task_run=None, retries_done=1),
                                   ValueError(), failed)
    wait = (second.state_details.scheduled_time - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 8 < wait <= 10  # the second delay
    assert policy.propose_failed(SimpleNamespace(task=flaky, task_run=None, retries_done=2),
                                 ValueError(), failed) is failed


def test_retry_policy_does_not_retry_forever_on_a_context_without_retries_done():
    """A context that lacks the declared attribute is an error, not 'no retries yet'
    (which, asked again and again, retried without end)."""
    @task(retries=1)
    def flaky():
        pass

    with pytest.raises(AttributeError, match="retries_done"):
        RetryPolicy(flaky).propose_failed(SimpleNamespace(task=flaky, task_run=None), ValueError(),
                                          Failed())
