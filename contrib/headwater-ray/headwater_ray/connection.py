"""Starting or reaching the Ray cluster a flow run's task runs go to.

Without an address a local Ray is started for the flow run and stopped after it; with
one (``ray://host:10001``, ``host:6379``, ``"auto"``) the runner connects and, when the
flow run ends, only disconnects: that cluster keeps running. A process that is already
connected (a script that called ``ray.init()`` itself) keeps its connection.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from headwater.errors import ConfigurationError, HeadwaterError

__all__ = ["ADDRESS_ENV", "Connection", "RayRunnerError", "check_init_kwargs", "connect", "default_cpus",
           "disconnect", "host_and_port"]

#: Read when ``address`` is not given, so ``HEADWATER_TASK_RUNNER=ray`` can use a cluster
#: (Ray's own ``RAY_ADDRESS`` is read after it).
ADDRESS_ENV = "HEADWATER_RAY_ADDRESS"

#: Seconds to wait for a cluster's port to answer: Ray itself retries for minutes.
REACH_TIMEOUT = 5.0

#: The Ray Client's port when a ``ray://`` address names none.
CLIENT_PORT = 10001

#: Options only a Ray that is started here takes.
LOCAL_ONLY = ("num_cpus", "num_gpus", "resources", "object_store_memory")


class RayRunnerError(HeadwaterError):
    """The Ray cluster could not be started, reached or used."""


@dataclass
class Connection:
    """The Ray a flow run uses. ``address`` names it in messages (a local Ray's is its
    GCS address); ``owned`` is True when this runner connected and so disconnects."""

    address: str
    owned: bool
    local: bool


def default_cpus() -> int:
    """A small local Ray: every CPU slot is a worker process, and each takes a while to start."""
    return min(os.cpu_count() or 1, 4)


def check_init_kwargs(address: str | None, init_kwargs: Any) -> dict[str, Any]:
    """``init_kwargs`` as a new dict; a :class:`ConfigurationError` naming a bad value."""
    if init_kwargs is None:
        return {}
    if not isinstance(init_kwargs, dict) or not all(isinstance(k, str) for k in init_kwargs):
        raise ConfigurationError(f"RayTaskRunner(init_kwargs={init_kwargs!r}): expected a dict of "
                                 f"ray.init() keyword arguments, e.g. init_kwargs={{'num_cpus': 2}}")
    if "address" in init_kwargs:
        raise ConfigurationError("RayTaskRunner(init_kwargs={'address': ...}): pass the address "
                                 "as RayTaskRunner(address=...)")
    given = [k for k in LOCAL_ONLY if k in init_kwargs]
    if address is not None and given:
        raise ConfigurationError(f"RayTaskRunner(address={address!r}) connects to an existing "
                                 f"cluster; {', '.join(given)} are for a local Ray it starts")
    return dict(init_kwargs)


def connect(address: str | None, init_kwargs: dict[str, Any]) -> Connection:
    """Start a local Ray, or connect to ``address``; raise :class:`RayRunnerError`
    naming the address when that fails."""
    # Ray replaces builtins.print the first time it shows a worker's output in this
    # process (for its tqdm bars); that would undo headwater's log_prints here.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    import ray

    wanted, setting = _wanted_address(address)
    origin = f" (from {setting})" if setting else ""
    if wanted is not None and wanted != "auto":
        check_reachable(wanted, setting)
    if ray.is_initialized():
        current = current_address()
        if wanted not in (None, "auto", current) and not wanted.startswith("ray://"):
            raise RayRunnerError(f"this process is already connected to the Ray cluster at "
                                 f"{current!r}, so it cannot connect to {wanted!r}{origin}: call "
                                 f"ray.shutdown() first, or leave the address out to use it")
        return Connection(current, owned=False, local=False)
    try:
        if wanted is None:
            kwargs = {"num_cpus": default_cpus(), "include_dashboard": False, **init_kwargs}
            ray.init(address="local", **kwargs)
        else:
            ray.init(address=wanted, **init_kwargs)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # Ray ends some failures with SystemExit
        what = f"connect to the Ray cluster at {wanted!r}{origin}" if wanted else \
            f"start a local Ray with {init_kwargs or {}}"
        raise RayRunnerError(f"could not {what}: {type(exc).__name__}: {exc}") from exc
    return Connection(wanted or current_address(), owned=True, local=wanted is None)


def _wanted_address(address: str | None) -> tuple[str | None, str | None]:
    """The address to reach (None: start a local Ray) and the environment variable it
    came from (None: the runner's own ``address``, or no address at all)."""
    if address:
        return address, None
    for setting in (ADDRESS_ENV, "RAY_ADDRESS"):
        value = os.environ.get(setting)
        if value:
            return value, setting
    return None, None


def disconnect(connection: Connection) -> None:
    """Stop a local Ray this runner started; leave a cluster it connected to running."""
    import ray

    if connection.owned:
        ray.shutdown()  # for a cluster: this driver disconnects; the cluster stays up


def current_address() -> str:
    """The GCS address of the Ray this process is connected to."""
    import ray

    try:
        return ray.get_runtime_context().gcs_address or "(unknown)"
    except Exception:  # a Ray Client connection has no GCS address of its own
        return "ray://(connected)"


def host_and_port(address: str, setting: str | None = None) -> tuple[str, int]:
    """``("head", 10001)`` for ``"ray://head:10001"`` or ``"head:10001"``; a
    :class:`ConfigurationError` naming the address when it is neither (and ``setting``,
    the environment variable it came from, if it did)."""
    client = address.startswith("ray://")
    hostport = address.removeprefix("ray://").split("/", 1)[0]
    if client and ":" not in hostport:
        hostport += f":{CLIENT_PORT}"
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        given = f"{setting}={address!r}" if setting else f"RayTaskRunner(address={address!r})"
        raise ConfigurationError(f"{given}: expected 'ray://host:port', 'host:port' or 'auto'")
    return host.strip("[]"), int(port)


def check_reachable(address: str, setting: str | None = None) -> None:
    """Fail within seconds when nothing listens at ``address`` (``host:port`` or
    ``ray://host:port``; ``setting`` names the environment variable it came from, if
    it did); Ray would retry for minutes, then exit the process."""
    host, port = host_and_port(address, setting)
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT).close()
    except OSError as exc:
        origin = f" (from {setting})" if setting else ""
        raise RayRunnerError(f"could not connect to the Ray cluster at {address!r}{origin}: nothing "
                             f"answers at {host}:{port} ({type(exc).__name__}: {exc})") from None
