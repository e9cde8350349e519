"""A custom cache key function: cache by the sum of the inputs.

[2, 2] runs; [1, 3] has the same sum, so the same key "4", and is Cached; [2, 3] runs.
"""

import time
from datetime import timedelta
from typing import Any

from headwater import flow, get_store, task


def cache_key_from_sum(context: Any, parameters: dict[str, Any]) -> int:
    print(parameters)
    return sum(parameters["nums"])  # any value works: 4 becomes the key string "4"


@task(cache_key_fn=cache_key_from_sum, cache_expiration=timedelta(minutes=1))
def cached_task(nums: list[int]) -> int:
    print("running an expensive operation")
    time.sleep(0.2)
    return sum(nums)


@flow
def test_caching(nums: list[int]) -> str:
    state = cached_task(nums, return_state=True)
    return f"{nums} -> {state.result()} ({state.name}, key {state.state_details.cache_key!r})"


if __name__ == "__main__":
    get_store().delete_cache_entries(task_name="cached_task")  # start fresh on every demo run
    outcomes = [test_caching(nums) for nums in ([2, 2], [1, 3], [2, 3])]
    for line in outcomes:
        print(line)
    states = [line.split("(")[1].split(",")[0] for line in outcomes]
    if states != ["Completed", "Cached", "Completed"]:
        raise SystemExit(f"unexpected states {states}")
