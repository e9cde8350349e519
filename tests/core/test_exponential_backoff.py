"""headwater.tasks.exponential_backoff as ``retry_delay_seconds``."""

from __future__ import annotations

import pytest

from headwater import flow, task
from headwater.errors import ConfigurationError
from headwater.tasks import exponential_backoff


def test_it_gives_doubling_delays_one_per_retry() -> None:
    """Prefect's meaning: called with the number of retries, a list of factor * 2**n."""
    backoff = exponential_backoff(backoff_factor=10)
    assert backoff(3) == [10, 20, 40]
    assert backoff(0) == []
    assert repr(backoff) == "exponential_backoff(backoff_factor=10)"


def test_a_task_takes_it_for_retry_delay_seconds_and_with_options_recomputes() -> None:
    @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2))
    def fetch() -> int:
        return 1

    assert fetch.retry_delay_seconds == [2, 4, 8]
    assert fetch.with_options(retries=4).retry_delay_seconds == [2, 4, 8, 16]
    assert task(retry_delay_seconds=exponential_backoff(backoff_factor=2))(lambda: 1).retry_delay_seconds == 0


def test_the_delays_are_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retry is scheduled after its own delay (the policy answers with them)."""
    from headwater.plugins import retries

    asked: list[float] = []
    real = retries.delay_for

    def spy(delays, retry_index, jitter):
        asked.append(real(delays, retry_index, jitter))
        return 0.0  # no real waiting in the test

    monkeypatch.setattr(retries, "delay_for", spy)
    attempts: list[int] = []

    @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1.5))
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionError("again")
        return "ok"

    @flow
    def pipeline() -> str:
        return flaky()

    assert pipeline() == "ok"
    assert asked == [1.5, 3.0, 6.0]


@pytest.mark.parametrize("factor", [-1, float("nan"), "10", True])
def test_a_bad_factor_is_refused(factor: object) -> None:
    with pytest.raises(ValueError, match="backoff_factor"):
        exponential_backoff(backoff_factor=factor)  # type: ignore[arg-type]


def test_delays_past_the_longest_allowed_are_refused_when_decorating() -> None:
    """20 retries doubling from an hour pass a year: refused like any too-long delay."""
    with pytest.raises(ConfigurationError, match="retry_delay_seconds="):
        task(retries=20, retry_delay_seconds=exponential_backoff(backoff_factor=3600))(lambda: 1)
