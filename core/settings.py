"""HEADWATER_* settings, read from the environment and ``[tool.headwater]``.

The environment wins over the project's ``pyproject.toml``. Keys under
``[tool.headwater]`` may be written either way: ``home = "..."`` or
``HEADWATER_HOME = "..."``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigurationError
from .identity import find_project_root

PREFIX = "HEADWATER_"
KEYS = (
    "HOME",
    "LOCAL_STORAGE_PATH",
    "DATABASE_URL",
    "LOGGING_LEVEL",
    "TASK_RUNNER",
    "PLUGINS",
    "DISABLE_PLUGINS",
    "DISABLE_PLUGIN_AUTOLOAD",
    "STORE_WRITER",
    "CONSOLE",
    "PERSIST_RESULTS",
    "RESULT_STORAGE",
    "HEARTBEAT_SECONDS",
)
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """The ``HEADWATER_*`` settings: the environment over ``[tool.headwater]``."""

    home: Path
    local_storage_path: Path
    database_url: str
    logging_level: str = "INFO"
    task_runner: str = "concurrent"
    plugins: tuple[str, ...] = ()
    disable_plugins: frozenset[str] = field(default_factory=frozenset)
    disable_plugin_autoload: bool = False
    #: Who writes the SQLite run store's batches: "auto", "thread" or "process" (checked
    #: by the store, ``plugins/sqlite_writers.py``, which knows the choices).
    store_writer: str = "auto"
    #: What the console shows of big flow runs: "auto", "lines", "progress" or "quiet"
    #: (checked by the console plugin, ``plugins/console_log.py``, which knows the choices).
    console: str = "auto"
    #: Persist every task's result (as ``@flow(persist_result=True)`` does for its tasks),
    #: so ``headwater runs retry`` can reuse them; a task's own ``persist_result=False`` wins.
    persist_results: bool = False
    #: Where persisted results go: a URL (``s3://bucket/prefix``, ``file:///shared/dir``,
    #: ``memory://``), served by the plugin registered for its scheme, or a plain path
    #: (the local result store there). Empty: ``local_storage_path``.
    result_storage: str = ""
    #: Seconds between two heartbeats of a flow process's unfinished runs in a store
    #: shared by many hosts (PostgreSQL): a run without one for six of them is shown
    #: Crashed. Shorter finds crashes sooner, at one small write per interval.
    heartbeat_seconds: float = 10.0
    #: Where a key's value came from when not the environment: key -> (pyproject path,
    #: key as written there). Used only to word error messages.
    origins: Mapping[str, tuple[Path, str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, start: Path | None = None
    ) -> Settings:
        """Settings from ``env`` (default ``os.environ``) over the nearest pyproject."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        origins: dict[str, tuple[Path, str]] = {}
        for key, (value, path, raw_key) in _pyproject_values(start or Path.cwd()).items():
            values[key] = value
            origins[key] = (path, raw_key)
        for key in KEYS:
            if PREFIX + key in env:
                values[key] = env[PREFIX + key]
                origins.pop(key, None)
        return cls.from_values(values, origins)

    @classmethod
    def from_values(cls, values: Mapping[str, Any],
                    origins: Mapping[str, tuple[Path, str]] | None = None) -> Settings:
        """Settings from already-gathered values (keys without the ``HEADWATER_`` prefix)."""
        origins = dict(origins or {})
        for key, value in values.items():
            _check_type(key, value, origins)
        home = Path(str(values.get("HOME") or "~/.headwater")).expanduser()
        storage = Path(str(values.get("LOCAL_STORAGE_PATH") or home / "storage")).expanduser()
        url = str(values.get("DATABASE_URL") or f"sqlite:///{home / 'headwater.db'}")
        level = str(values.get("LOGGING_LEVEL") or "INFO").upper()
        if level not in _LEVELS:
            raise ConfigurationError(
                f"{_describe('LOGGING_LEVEL', values.get('LOGGING_LEVEL'), origins)} is not a "
                f"logging level; expected one of {', '.join(_LEVELS)}"
            )
        return cls(
            home=home,
            local_storage_path=storage,
            database_url=url,
            logging_level=level,
            task_runner=str(values.get("TASK_RUNNER") or "concurrent"),
            plugins=_names(values.get("PLUGINS")),
            disable_plugins=frozenset(_names(values.get("DISABLE_PLUGINS"))),
            disable_plugin_autoload=_flag("DISABLE_PLUGIN_AUTOLOAD", values.get("DISABLE_PLUGIN_AUTOLOAD"),
                                          origins),
            store_writer=str(values.get("STORE_WRITER") or "auto"),
            console=str(values.get("CONSOLE") or "auto"),
            persist_results=_flag("PERSIST_RESULTS", values.get("PERSIST_RESULTS"), origins),
            result_storage=_storage(values.get("RESULT_STORAGE"), origins),
            heartbeat_seconds=_seconds("HEARTBEAT_SECONDS", values.get("HEARTBEAT_SECONDS"), 10.0, origins),
            origins=origins,
        )

    def describe(self, key: str, value: Any) -> str:
        """``key`` and ``value`` as the user wrote them, for error messages:
        ``HEADWATER_TASK_RUNNER='dsak'`` or ``task_runner = 'dsak' under [tool.headwater]
        in /project/pyproject.toml``."""
        return _describe(key, value, self.origins)


def hide_password(url: str) -> str:
    """``url`` with the password of its user part, if any, shown as ``***``
    (``postgresql://team:***@db:5432/runs``): what messages and pages show of a database URL."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or "/" in userinfo or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _describe(key: str, value: Any, origins: Mapping[str, tuple[Path, str]]) -> str:
    if key == "DATABASE_URL" and isinstance(value, str):
        value = hide_password(value)
    if key in origins:
        path, raw_key = origins[key]
        return f"{raw_key} = {value!r} under [tool.headwater] in {path}"
    return f"{PREFIX}{key}={value!r}"


_STRING_KEYS = ("HOME", "LOCAL_STORAGE_PATH", "DATABASE_URL", "LOGGING_LEVEL", "TASK_RUNNER", "STORE_WRITER",
                "CONSOLE", "RESULT_STORAGE")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def storage_scheme(storage: str) -> str:
    """The URL scheme of a ``HEADWATER_RESULT_STORAGE`` value, lower case (``"s3"`` for
    ``s3://bucket/prefix``); ``""`` for a plain path."""
    scheme, sep, _ = storage.partition("://")
    return scheme.lower() if sep else ""


def _storage(value: Any, origins: Mapping[str, tuple[Path, str]]) -> str:
    text = str(value or "").strip()
    scheme, sep, _ = text.partition("://")
    if sep and _SCHEME.fullmatch(scheme) is None:
        raise ConfigurationError(
            f"{_describe('RESULT_STORAGE', value, origins)} is not a storage URL; expected a URL "
            f"such as s3://bucket/prefix, file:///shared/dir or memory://, or a plain path")
    return text


def _check_type(key: str, value: Any, origins: Mapping[str, tuple[Path, str]]) -> None:
    # Environment values are always strings; these checks catch pyproject values such as
    # ``task_runner = 5`` before they are turned into a misleading string.
    if value is None:
        return
    if key in _STRING_KEYS and not isinstance(value, str):
        raise ConfigurationError(f"{_describe(key, value, origins)} is not a string; "
                                 f"write it in quotes, e.g. {key.lower()} = \"...\"")
    if key in ("PLUGINS", "DISABLE_PLUGINS") and not (
            isinstance(value, str)
            or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))):
        raise ConfigurationError(f"{_describe(key, value, origins)}: expected a list of plugin "
                                 f"names (strings) or one comma-separated string")


def _seconds(key: str, value: Any, default: float, origins: Mapping[str, tuple[Path, str]]) -> float:
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf") or isinstance(value, bool):
        raise ConfigurationError(f"{_describe(key, value, origins)} is not a number of seconds; "
                                 f"expected a positive number such as 10 or 0.5")
    return seconds


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _flag(key: str, value: Any, origins: Mapping[str, tuple[Path, str]] | None = None) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_describe(key, value, origins or {})} is not a boolean; "
                             f"expected 1/0, true/false")


def _pyproject_values(start: Path) -> dict[str, tuple[Any, Path, str]]:
    """``[tool.headwater]`` of the project: key -> (value, pyproject path, key as written)."""
    root = find_project_root(start)
    if root is None or not (root / "pyproject.toml").exists():
        return {}
    path = root / "pyproject.toml"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read [tool.headwater] from {path}: {exc}") from None
    table = data.get("tool", {}).get("headwater", {})
    out: dict[str, tuple[Any, Path, str]] = {}
    for raw_key, value in table.items():
        key = raw_key.upper()
        if key.startswith(PREFIX):
            key = key[len(PREFIX):]
        if key not in KEYS:
            raise ConfigurationError(
                f"unknown setting {raw_key!r} under [tool.headwater] in {path}; "
                f"expected one of {', '.join(k.lower() for k in KEYS)}"
            )
        out[key] = (value, path, raw_key)
    return out
