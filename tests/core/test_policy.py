"""The state policy contract (headwater.policy): what a policy reads, and which answers
the engine acts on. Policies are tested here with contexts made by hand, no engine."""

from __future__ import annotations

import datetime as dt

import pytest

from headwater import flow, task
from headwater.plugins.retries import RetryPolicy
from headwater.policy import (FlowRunAttempts, PolicyAnswerError, StatePolicy, TaskRunContext, WrappingPolicy,
                              check_completed_answer, check_failed_answer, check_running_answer, is_retry)
from headwater.runs import FlowRun, TaskRun
from headwater.states import (AwaitingRetry, Cached, Completed, Failed, Pending, Running, Scheduled,
                              StateType)

SOON = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


class Odd(StatePolicy):
    pass


def test_only_a_scheduled_answer_that_says_when_is_a_retry():
    assert is_retry(AwaitingRetry())  # no time: at once
    assert is_retry(Scheduled(scheduled_time=SOON))
    assert not is_retry(Scheduled())  # scheduled for no time: nothing to wait for
    assert not is_retry(Failed())
    assert not is_retry(Running())


@pytest.mark.parametrize("answer", [Failed(), Completed(), AwaitingRetry(), Scheduled(scheduled_time=SOON)])
def test_actionable_failure_answers_pass_unchanged(answer):
    assert check_failed_answer(Odd(), answer) is answer


@pytest.mark.parametrize("answer", [None, 42, Pending(), Running(), Scheduled()])
def test_other_failure_answers_are_refused_naming_the_policy_and_the_answer(answer):
    with pytest.raises(PolicyAnswerError) as info:
        check_failed_answer(Odd(), answer, "task run 'load-0'")
    message = str(info.value)
    assert "test_policy.Odd answered propose_failed() with " + repr(answer) in message
    assert "for task run 'load-0'" in message and "expected" in message


def test_a_refused_answer_names_the_wrapped_policy_that_gave_it_not_the_wrapper():
    class Delegating(WrappingPolicy):  # wraps, changes nothing about failures
        pass

    with pytest.raises(PolicyAnswerError, match=r"test_policy\.Odd answered propose_failed"):
        check_failed_answer(Delegating(Delegating(Odd())), None)


def test_running_answers_are_none_or_final():
    assert check_running_answer(Odd(), None) is None
    cached = Cached()
    assert check_running_answer(Odd(), cached) is cached
    with pytest.raises(PolicyAnswerError, match=r"answered propose_running\(\) with Running"):
        check_running_answer(Odd(), Running())


def test_completed_answers_are_final():
    state = Completed(data=1)
    assert check_completed_answer(Odd(), state) is state
    with pytest.raises(PolicyAnswerError, match=r"propose_completed\(\) with None"):
        check_completed_answer(Odd(), None)


@task(retries=2, retry_delay_seconds=[10, 20])
def extract():
    return 1


def _context(retries_done: int) -> TaskRunContext:
    run = TaskRun("id-1", "extract", "abcd1234", "extract-0", {}, frozenset(), None)
    return TaskRunContext(extract, run, {}, retries_done=retries_done)


def test_the_retry_policy_reads_retries_done_from_a_hand_made_context():
    policy = RetryPolicy(extract)
    failed = Failed(message="boom")
    first = policy.propose_failed(_context(0), ValueError("boom"), failed)
    assert is_retry(first) and first.message == "boom"
    wait = (first.state_details.scheduled_time - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 8 < wait <= 10
    second = policy.propose_failed(_context(1), ValueError("boom"), failed)
    wait = (second.state_details.scheduled_time - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 18 < wait <= 20
    assert policy.propose_failed(_context(2), ValueError("boom"), failed) is failed


def test_a_context_without_resources_says_so_when_a_policy_reads_the_store():
    with pytest.raises(AttributeError, match="without resources"):
        _context(0).store


@flow(retries=1, retry_delay_seconds=3)
def nightly():
    return 1


def test_the_retry_policy_of_a_flow_reads_its_attempts():
    run = FlowRun("f-1", "nightly", "calm-otter", {}, frozenset())
    policy = RetryPolicy(nightly)
    failed = Failed(message="down")
    answer = policy.propose_failed(FlowRunAttempts(nightly, run), ValueError("down"), failed)
    assert is_retry(answer)
    assert policy.propose_failed(FlowRunAttempts(nightly, run, retries_done=1), ValueError("down"),
                                 failed) is failed
    assert answer.type is StateType.SCHEDULED


def test_a_retry_time_given_in_seconds_is_refused_not_crashed_on():
    """scheduled_time must be a datetime: 5 (seconds) is an easy mistake, refused with
    the policy named instead of crashing the run when its delay is computed."""
    answer = Scheduled(scheduled_time=5)
    assert not is_retry(answer)
    with pytest.raises(PolicyAnswerError, match="a datetime"):
        check_failed_answer(Odd(), answer)


def test_a_wrapper_keeps_its_own_class_settings_and_fills_in_missing_methods():
    class Deadline(WrappingPolicy):
        timeout_seconds = 0.2

    class Duck:  # a policy that is not a StatePolicy and has one method
        timeout_seconds = 5.0

        def propose_failed(self, ctx, exc, state):
            return state

    wrapped = Deadline(RetryPolicy(extract))
    assert wrapped.timeout_seconds == 0.2
    duck = WrappingPolicy(Duck())
    assert duck.timeout_seconds == 5.0 and not duck.uses_cache
    assert duck.result_key(_context(0)) is None and duck.propose_running(_context(0)) is None
