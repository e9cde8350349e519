"""Caching by inputs: the same input again is Cached, a new input runs, entries expire.

Run it twice in a row: the first flow run of each pair still computes, because the
script clears its own cache entries first so the demo shows the same story every time.
"""

import time
from datetime import timedelta

from headwater import flow, get_store, task
from headwater.tasks import task_input_hash


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
def hello_task(name_input: str) -> str:
    # Doing some work
    print(f"Saying hello {name_input}")
    return "hello " + name_input


# The same task with a much shorter life for its entries (its own name, so its own keys).
short_lived_hello = hello_task.with_options(name="short_lived_hello",
                                            cache_expiration=timedelta(seconds=0.5))


task_states: list[str] = []  # what each flow run's task ended in, for the summary


@flow
def hello_flow(name_input: str, quick: bool = False) -> str:
    greet = short_lived_hello if quick else hello_task
    state = greet(name_input, return_state=True)
    print(f"{greet.name} finished in state {state.name}")
    task_states.append(state.name)
    return state.result()


if __name__ == "__main__":
    store = get_store()
    for name in ("hello_task", "short_lived_hello"):
        store.delete_cache_entries(task_name=name)  # start fresh on every demo run

    print("-- the same name twice: the second task run is Cached --")
    hello_flow("Marvin")
    hello_flow("Marvin")
    print("-- another name: the task runs --")
    hello_flow("Trillian")

    print("-- expiration: after 0.5 s the entry is gone and the task runs again --")
    hello_flow("Marvin", quick=True)
    hello_flow("Marvin", quick=True)
    time.sleep(0.6)
    hello_flow("Marvin", quick=True)

    print("task run states:", task_states)
    expected = ["Completed", "Cached", "Completed", "Completed", "Cached", "Completed"]
    if task_states != expected:
        raise SystemExit(f"unexpected states {task_states}; expected {expected}")
