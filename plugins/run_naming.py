"""Run names: ``flow_run_name`` / ``task_run_name`` templates and callables, generated
``adjective-animal`` slugs for flow runs without one, and ``{task name}-{task key}-{index}``
for task runs without one.

Without this plugin (``HEADWATER_DISABLE_PLUGINS=run_naming``) and any other namer, the
engine names each run by its id: the last resort.

A template is Python format syntax over the bound parameters (defaults included):
``"{name}-on-{date:%A}"``. A callable takes no arguments and may read
``headwater.runtime``.
"""

from __future__ import annotations

import random
import string
from typing import Any

from headwater.errors import RunNameError
from headwater.plugin_manager import hookimpl

ADJECTIVES = (
    "amber", "attentive", "bold", "brave", "bright", "calm", "clever", "cobalt", "crimson",
    "curious", "daring", "eager", "earnest", "electric", "emerald", "fearless", "festive",
    "gentle", "gifted", "golden", "hardy", "honest", "humble", "jolly", "keen", "lively",
    "lucky", "mellow", "merry", "mighty", "nimble", "noble", "olive", "patient", "plucky",
    "proud", "quick", "quiet", "radiant", "rapid", "red", "robust", "rustic", "saffron",
    "scarlet", "serene", "silver", "sleek", "smart", "snowy", "steady", "stellar", "sturdy",
    "sunny", "swift", "taupe", "tidy", "tranquil", "upbeat", "valiant", "vivid", "warm",
    "wise", "witty", "zealous",
)
ANIMALS = (
    "albatross", "alpaca", "badger", "beaver", "bison", "bobcat", "buffalo", "caribou",
    "chamois", "cheetah", "condor", "corgi", "coyote", "crane", "dingo", "dolphin", "eagle",
    "egret", "falcon", "ferret", "finch", "fox", "gazelle", "gecko", "gibbon", "grasshopper",
    "heron", "ibex", "jackal", "jaguar", "kestrel", "kingfisher", "koala", "lemur", "lynx",
    "marmot", "marten", "mongoose", "moose", "narwhal", "ocelot", "okapi", "orca", "osprey",
    "otter", "owl", "panda", "pelican", "puffin", "quail", "raven", "salmon", "seal",
    "stork", "swan", "tapir", "tern", "turaco", "vulture", "walrus", "wombat", "yak", "zebra",
)

_random = random.SystemRandom()


def generate_slug() -> str:
    """A random two-word name such as ``attentive-turaco``."""
    return f"{_random.choice(ADJECTIVES)}-{_random.choice(ANIMALS)}"


def render_name(template: Any, parameters: dict[str, Any], owner: str) -> str:
    """Apply a name template (str) or callable; errors name the field or the callable."""
    if callable(template):
        what = getattr(template, "__name__", None) or repr(template)
        try:
            name = template()
        except Exception as exc:
            raise RunNameError(f"run name callable {what!r} for {owner} raised "
                               f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(name, str):
            raise RunNameError(f"run name callable {what!r} for {owner} returned {name!r}; "
                               f"expected a string")
        return name
    try:
        return template.format(**parameters)
    except KeyError as exc:
        field = exc.args[0]
        known = ", ".join(parameters) or "none"
        raise RunNameError(f"run name template {template!r} for {owner} names {{{field}}}, "
                           f"which is not a parameter; parameters: {known}") from None
    except (IndexError, ValueError, AttributeError, TypeError) as exc:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        raise RunNameError(f"run name template {template!r} for {owner} could not be formatted "
                           f"(fields {fields}): {exc}") from None


@hookimpl(trylast=True)
def headwater_flow_run_name(flow: Any, parameters: dict[str, Any]) -> str | None:
    """The flow's ``flow_run_name`` rendered, or a generated slug."""
    template = flow.spec.flow_run_name
    if template is None:
        return generate_slug()
    return render_name(template, parameters, f"flow {flow.name!r}")


@hookimpl(trylast=True)
def headwater_task_run_name(task: Any, parameters: dict[str, Any], index: int | str) -> str | None:
    """The task's ``task_run_name`` rendered, or ``{task name}-{task key}-{index}``
    (``hello_task-e97fb216-0``): the same task in another flow run gets the same names."""
    template = task.spec.task_run_name
    if template is None:
        return f"{task.name}-{task.task_key}-{index}"
    return render_name(template, parameters, f"task {task.name!r}")
