"""The engine: what happens between calling a flow or task and its final state.

One concept per module, lowest first:

* ``context``: a flow run's shared state, and the context variables of the active runs;
* ``futures``: futures of submitted task runs, and the ``Work`` runners receive;
* ``timeouts``: calling a body within a time limit, sync or async;
* ``attempts``: the decisions of a run's attempts, as generators that do no I/O;
* ``drivers``: the sync and async drivers of those generators;
* ``task_loop``: one task run's steps (``TaskExecution``) and its execution;
* ``task_creation``: creating, naming and recording task runs;
* ``calls``: ``task(...)``, ``.submit`` and ``.map``;
* ``flow_loop``: one flow run, from its creation to its final state.

Nothing here is public API: runners that run task runs elsewhere use
:mod:`headwater.remote`; plugins read runs through :mod:`headwater.context` and
:mod:`headwater.runtime`. docs/architecture.md maps the whole package.
"""
