"""headwater.cache_policies: the keys each policy computes, combining them, and how the
caching plugin uses them (through the cache-key hook, with the usual cache rules)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from headwater import flow, task
from headwater.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    Inputs,
    UnhashableInputs,
)
from headwater.errors import ConfigurationError
from headwater.plugins.caching import CacheKeyError
from headwater.tasks import task_input_hash


def context(flow_run_id: str | None = "flow-1", run_id: str = "task-1", fn: Any = None) -> Any:
    """The parts of a TaskRunContext the policies read."""
    return SimpleNamespace(task_run=SimpleNamespace(id=run_id, flow_run_id=flow_run_id),
                           task=SimpleNamespace(fn=fn or context, name="t"), flow_run=None)


def key(policy: CachePolicy, inputs: dict[str, Any] | None = None, flow_parameters: dict[str, Any] | None = None,
        ctx: Any = None) -> str | None:
    return policy.compute_key(ctx or context(), inputs or {}, flow_parameters or {})


def test_inputs_keys_by_value_and_ignores_what_is_subtracted() -> None:
    """Equal arguments give equal keys whatever the dict order; another value another
    key; ``INPUTS - "verbose"`` ignores that argument; no arguments, no key."""
    assert key(INPUTS, {"a": 1, "b": [1, 2]}) == key(INPUTS, {"b": [1, 2], "a": 1})
    assert key(INPUTS, {"a": 1}) != key(INPUTS, {"a": 2})
    assert key(INPUTS - "verbose", {"a": 1, "verbose": True}) == key(INPUTS - "verbose", {"a": 1, "verbose": False})
    assert key(INPUTS, {"a": 1, "verbose": True}) != key(INPUTS, {"a": 1, "verbose": False})
    assert key(INPUTS, {}) is None


def test_inputs_that_cannot_be_hashed_raise_naming_the_argument() -> None:
    """A lock has no canonical hash: the policy names the argument instead of keying the
    call by the others."""
    with pytest.raises(UnhashableInputs, match="'guard'"):
        key(INPUTS, {"a": 1, "guard": threading.Lock()})


def test_run_id_is_the_flow_run_id_or_the_task_run_id_outside_a_flow() -> None:
    assert key(RUN_ID, ctx=context("flow-1")) == "flow-1"
    assert key(RUN_ID, ctx=context(None, run_id="task-9")) == "task-9"


def test_flow_parameters_key_by_the_flow_run_parameters() -> None:
    assert key(FLOW_PARAMETERS, flow_parameters={"day": "mon"}) != key(FLOW_PARAMETERS, flow_parameters={"day": "tue"})
    assert key(FLOW_PARAMETERS, flow_parameters={}) is None


def test_task_source_changes_with_the_body_only() -> None:
    """Two functions with different bodies differ; the decorator's options do not count."""
    def one() -> int:
        return 1

    def two() -> int:
        return 2

    assert key(TASK_SOURCE, ctx=context(fn=one)) != key(TASK_SOURCE, ctx=context(fn=two))
    assert key(TASK_SOURCE, ctx=context(fn=task(retries=1)(one).fn)) == key(TASK_SOURCE, ctx=context(fn=one))


def test_adding_policies_combines_their_keys() -> None:
    """``a + b`` keys by both parts; NO_CACHE added changes nothing; nested sums flatten;
    DEFAULT is INPUTS + TASK_SOURCE + RUN_ID."""
    both = INPUTS + RUN_ID
    assert isinstance(both, CompoundCachePolicy)
    assert key(both, {"a": 1}, ctx=context("f1")) != key(both, {"a": 1}, ctx=context("f2"))
    assert key(both, {"a": 1}) != key(both, {"a": 2})
    assert INPUTS + NO_CACHE is INPUTS and NO_CACHE + INPUTS is INPUTS
    assert (INPUTS + RUN_ID) + TASK_SOURCE == INPUTS + (RUN_ID + TASK_SOURCE)
    assert DEFAULT == INPUTS + TASK_SOURCE + RUN_ID
    assert key(NO_CACHE, {"a": 1}) is None
    assert key(RUN_ID + FLOW_PARAMETERS) == key(CompoundCachePolicy([RUN_ID]))  # parts without a key drop out


def test_subtracting_from_a_compound_reaches_its_inputs() -> None:
    assert key(DEFAULT - "x", {"a": 1, "x": 1}) == key(DEFAULT - "x", {"a": 1, "x": 2})
    assert repr(DEFAULT - "x") == "TASK_SOURCE + RUN_ID + INPUTS - 'x'"
    with pytest.raises(TypeError, match="parameter name"):
        INPUTS - 3  # type: ignore[operator]


def test_cache_key_fn_policy_calls_the_function() -> None:
    policy = CacheKeyFnPolicy(cache_key_fn=lambda ctx, parameters: f"day-{parameters['day']}")
    assert key(policy, {"day": "mon"}) == "day-mon"
    with pytest.raises(TypeError, match="expected a function"):
        CacheKeyFnPolicy(cache_key_fn="not callable")  # type: ignore[arg-type]


# -- through the caching plugin -------------------------------------------------------------


def test_a_task_with_a_cache_policy_is_cached_with_expiration_and_refresh() -> None:
    """The policy keys the usual cache: an entry hits, ``refresh_cache`` recomputes, and
    ``cache_expiration`` is recorded on the hit."""
    calls: list[int] = []

    @task(cache_policy=INPUTS, cache_expiration=dt.timedelta(hours=1))
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @flow
    def pipeline(refresh: bool = False) -> list[Any]:
        fn = double.with_options(refresh_cache=True) if refresh else double
        return [fn(3, return_state=True) for _ in range(2)]

    first, second = pipeline()
    assert (first.name, second.name, calls) == ("Completed", "Cached", [3])
    assert second.state_details.cache_expiration is not None
    assert second.result() == 6
    assert [s.name for s in pipeline(refresh=True)] == ["Completed", "Completed"]


def test_no_cache_and_no_option_leave_a_task_uncached_at_the_usual_cost() -> None:
    """Neither a task that says nothing nor one with NO_CACHE gets the caching policy, so
    neither computes a key."""
    from headwater.engine.context import flow_run_ctx
    from headwater.plugins.caching import CachePolicy as CachingStatePolicy

    @task
    def plain() -> int:
        return 1

    @task(cache_policy=NO_CACHE)
    def uncached() -> int:
        return 1

    @task(cache_policy=INPUTS)
    def cached(x: int) -> int:
        return x

    @flow
    def pipeline() -> list[bool]:
        context = flow_run_ctx.get()
        return [any(isinstance(p, CachingStatePolicy) for p in _chain(context.policy_for(t)))
                for t in (plain, uncached, cached)]

    assert pipeline() == [False, False, True]
    assert [s.name for s in [uncached(return_state=True), uncached(return_state=True)]] == ["Completed", "Completed"]


def _chain(policy: Any) -> list[Any]:
    found = []
    while policy is not None:
        found.append(policy)
        policy = getattr(policy, "__dict__", {}).get("inner")
    return found


def test_an_unhashable_argument_runs_uncached_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A lock among the arguments: each call runs, and one warning names the task and the
    argument (once per flow run)."""
    calls: list[int] = []

    @task(cache_policy=INPUTS)
    def guarded(x: int, guard: Any) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[str]:
        lock = threading.Lock()
        return [guarded(1, lock, return_state=True).name for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger="headwater"):
        assert pipeline() == ["Completed"] * 3
    assert calls == [1, 1, 1]
    warned = [r.getMessage() for r in caplog.records if "'guard'" in r.getMessage()]
    assert len(warned) == 1 and "'guarded'" in warned[0] and "uncached" in warned[0]


def test_a_policy_that_raises_fails_the_attempt_naming_policy_and_task() -> None:
    """As a raising cache_key_fn: CacheKeyError, and retries apply."""
    attempts: list[int] = []

    class Flaky(CachePolicy):
        def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                        **kwargs: Any) -> str:
            attempts.append(1)
            raise ConnectionError("key service is down")

    @task(cache_policy=Flaky(), retries=1)
    def work() -> int:
        return 1

    @flow
    def pipeline() -> int:
        return work()

    with pytest.raises(CacheKeyError, match="cache_policy Flaky\\(\\) of task 'work' raised ConnectionError"):
        pipeline()
    assert len(attempts) == 2


def test_a_key_fn_policy_answering_a_number_keys_like_cache_key_fn() -> None:
    @task(cache_policy=CacheKeyFnPolicy(cache_key_fn=lambda ctx, parameters: sum(parameters["nums"])))
    def total(nums: list[int]) -> int:
        return sum(nums)

    @flow
    def pipeline() -> list[Any]:
        return [total([2, 2], return_state=True), total([1, 3], return_state=True)]

    first, second = pipeline()
    assert second.name == "Cached" and second.state_details.cache_key == "4"


def test_cache_key_fn_and_cache_policy_together_are_an_error_naming_both() -> None:
    with pytest.raises(ConfigurationError, match="cache_key_fn=task_input_hash and cache_policy=INPUTS"):
        task(cache_key_fn=task_input_hash, cache_policy=INPUTS)(lambda: 1)


def test_a_cache_policy_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cache_policy='inputs': expected a cache policy"):
        task(cache_policy="inputs")(lambda: 1)


def test_cache_options_with_a_policy_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    """cache_expiration and refresh_cache act on a policy's entries: no 'has no effect'
    warning (which a task without any cache option still gets)."""
    task(cache_policy=INPUTS, cache_expiration=dt.timedelta(hours=1), refresh_cache=True)(lambda: 1)
    assert not [w for w in recwarn if "has no effect" in str(w.message)]
    with pytest.warns(UserWarning, match="has no effect"):
        task(cache_policy=NO_CACHE, refresh_cache=True)(lambda: 1)


def test_inputs_policies_merge_their_exclusions() -> None:
    merged = CompoundCachePolicy([Inputs(exclude=["a"]), RUN_ID, Inputs(exclude=["b"])])
    assert key(merged, {"a": 1, "b": 1, "c": 1}) == key(merged, {"a": 2, "b": 2, "c": 1})


def test_prefect_only_configuration_is_refused_clearly() -> None:
    """Separate key storage, locks and isolation levels do not exist here: one clear error
    instead of a setting silently ignored; from_cache_key_fn is CacheKeyFnPolicy."""
    with pytest.raises(ConfigurationError, match=r"INPUTS.configure\(key_storage='/tmp/keys'\)"):
        INPUTS.configure(key_storage="/tmp/keys")
    fn = lambda ctx, parameters: "k"  # noqa: E731
    assert CachePolicy.from_cache_key_fn(fn) == CacheKeyFnPolicy(cache_key_fn=fn)


def test_default_makes_a_flow_retry_reuse_the_tasks_that_finished() -> None:
    """RUN_ID is the flow run's id, the same for its retries: with DEFAULT, a retried flow
    run does not redo a task that completed in the failed attempt (as in Prefect 3)."""
    calls: list[str] = []

    @task(cache_policy=DEFAULT)
    def extract(day: str) -> list[int]:
        calls.append("extract")
        return [1, 2]

    @task
    def load(rows: list[int]) -> int:
        calls.append("load")
        if calls.count("load") == 1:
            raise ConnectionError("warehouse not ready")
        return sum(rows)

    @flow(retries=1)
    def nightly(day: str) -> int:
        return load(extract(day))

    assert nightly("mon") == 3
    assert calls == ["extract", "load", "load"]
    nightly("mon")  # a new flow run: a new RUN_ID, computed again
    assert calls.count("extract") == 2


def test_a_cache_with_persist_result_false_is_refused_naming_both():
    """Caching needs the result persisted: ``persist_result=False`` beside a caching
    policy or a key function is one error naming both (nothing written silently)."""
    from headwater.cache_policies import INPUTS, NO_CACHE
    from headwater.errors import ConfigurationError
    from headwater.tasks import task, task_input_hash

    with pytest.raises(ConfigurationError, match=r"cache_policy=INPUTS caches the result.*persist_result=False"):
        task(cache_policy=INPUTS, persist_result=False)(lambda x: x)
    with pytest.raises(ConfigurationError, match=r"cache_key_fn=task_input_hash caches.*persist_result=False"):
        task(cache_key_fn=task_input_hash, persist_result=False)(lambda x: x)
    task(cache_policy=NO_CACHE, persist_result=False)(lambda x: x)  # nothing cached: fine
