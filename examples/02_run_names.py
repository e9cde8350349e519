"""Naming runs: templates over the parameters, and callables reading headwater.runtime."""

import datetime

from headwater import flow, task
from headwater.runtime import flow_run, task_run


def describe_task_run() -> str:
    params = task_run.parameters
    return f"{flow_run.flow_name}-{task_run.task_name}-for-{params['user']}-x{params['repeat']}"


@task(task_run_name=describe_task_run)
def greet(user: str, repeat: int = 2) -> str:
    return " ".join([f"hi {user}"] * repeat)


@task(task_run_name="shout-{user}-on-{day:%A}")
def shout(user: str, day: datetime.date) -> str:
    return f"HEY {user.upper()}"


@flow(flow_run_name="{user}-on-{day:%A}")
def greetings(user: str, day: datetime.date) -> list[str]:
    return [greet(user), shout(user, day)]


def nightly_name() -> str:
    return f"nightly-{flow_run.parameters['limit']}-rows"


@flow(flow_run_name=nightly_name)
def nightly(limit: int = 100) -> int:
    return limit


if __name__ == "__main__":
    print(greetings("marvin", datetime.date(2026, 11, 26)))  # run named marvin-on-Thursday
    print(nightly())
