"""``with tags(...)``: the runs created inside a block carry its tags."""

from __future__ import annotations

import asyncio

import pytest

from headwater import flow, get_store, tags, task
from headwater.context import get_run_context
from headwater.errors import ConfigurationError
from headwater.run_tags import current_tags
from headwater.runtime import flow_run, task_run


@task(tags=["own"])
def tagged() -> list[str]:
    return task_run.tags


def test_blocks_nest_and_leaving_one_restores_the_outer_tags():
    """An inner block adds to the outer one; leaving it restores the outer set, and
    leaving the outer one leaves no tags."""
    with tags("a", "b") as outer:
        assert outer == {"a", "b"}
        with tags("c") as inner:
            assert inner == {"a", "b", "c"} == current_tags()
        assert current_tags() == {"a", "b"}
    assert current_tags() == frozenset()


def test_a_block_is_left_restored_when_its_body_raises():
    """An exception leaving the block still restores the tags before it."""
    with pytest.raises(ValueError):
        with tags("doomed"):
            raise ValueError("boom")
    assert current_tags() == frozenset()


def test_flow_runs_and_task_runs_created_inside_carry_the_tags():
    """The flow run gets the block's tags; its task runs get the task's own, the
    block's around the flow call and the block's inside the body; all recorded."""

    @flow
    def tagged_flow() -> tuple[list[str], list[str], list[str]]:
        with tags("inner"):
            inside = tagged()
        return flow_run.tags, tagged(), inside

    with tags("outer"):
        flow_tags, plain, inside = tagged_flow()
    assert flow_tags == ["outer"]
    assert plain == ["outer", "own"]
    assert inside == ["inner", "outer", "own"]
    store = get_store()
    [run] = store.read_flow_runs()
    assert sorted(run.tags) == ["outer"]
    assert sorted(sorted(t.tags) for t in store.read_task_runs(flow_run_id=run.id)) == [
        ["inner", "outer", "own"], ["outer", "own"]]


def test_submitted_mapped_and_async_task_runs_carry_the_tags():
    """Runs created by submit and map (run on worker threads) and async tasks carry the
    tags in effect where they were created."""

    @task
    def tagged_item(x: int) -> list[str]:
        return task_run.tags

    @task
    async def tagged_async() -> list[str]:
        return task_run.tags

    @flow(task_runner="concurrent")
    def fan_out() -> list[list[str]]:
        with tags("fan"):
            submitted = tagged.submit()
            mapped = tagged_item.map([1, 2])
        after = tagged.submit()
        return [f.result() for f in [submitted, *mapped, after]]

    assert fan_out() == [["fan", "own"], ["fan"], ["fan"], ["own"]]

    @flow
    async def async_flow() -> list[str]:
        with tags("aio"):
            return await tagged_async()

    assert asyncio.run(async_flow()) == ["aio"]


def test_outside_a_block_a_task_run_keeps_its_task_s_own_tag_set():
    """Outside any block a task run's tags are its task's own set, not a copy: creating
    a run pays one context-variable read for tags, nothing more."""

    @task(tags=["own"])
    def job() -> bool:
        return get_run_context().task_run.tags is job.spec.tags

    @flow
    def plain() -> bool:
        return job()

    assert plain() is True


def test_a_tag_that_is_not_a_string_is_a_clear_error():
    """tags(1) names the bad value and what was expected."""
    with pytest.raises(ConfigurationError, match=r"every tag must be a string, got 1"):
        with tags("ok", 1):  # type: ignore[arg-type]
            pass
    assert current_tags() == frozenset()
