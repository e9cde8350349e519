"""HEADWATER_* settings, read from the environment and ``[tool.headwater]``.

The environment wins over the project's ``pyproject.toml``. Keys under
``[tool.headwater]`` may be written either way: ``home = "..."`` or
``HEADWATER_HOME = "..."``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigurationError

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
)
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    home: Path
    local_storage_path: Path
    database_url: str
    logging_level: str = "INFO"
    task_runner: str = "concurrent"
    plugins: tuple[str, ...] = ()
    disable_plugins: frozenset[str] = field(default_factory=frozenset)
    disable_plugin_autoload: bool = False

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, start: Path | None = None
    ) -> Settings:
        """Settings from ``env`` (default ``os.environ``) over the nearest pyproject."""
        env = os.environ if env is None else env
        values: dict[str, Any] = dict(_pyproject_values(start or Path.cwd()))
        for key in KEYS:
            if PREFIX + key in env:
                values[key] = env[PREFIX + key]
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Settings:
        home = Path(str(values.get("HOME") or "~/.headwater")).expanduser()
        storage = Path(str(values.get("LOCAL_STORAGE_PATH") or home / "storage")).expanduser()
        url = str(values.get("DATABASE_URL") or f"sqlite:///{home / 'headwater.db'}")
        level = str(values.get("LOGGING_LEVEL") or "INFO").upper()
        if level not in _LEVELS:
            raise ConfigurationError(
                f"HEADWATER_LOGGING_LEVEL={values.get('LOGGING_LEVEL')!r} is not a "
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
            disable_plugin_autoload=_flag("DISABLE_PLUGIN_AUTOLOAD", values.get("DISABLE_PLUGIN_AUTOLOAD")),
        )


def _names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _flag(key: str, value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{PREFIX}{key}={value!r} is not a boolean; expected 1/0, true/false")


def find_project_root(start: Path) -> Path | None:
    """The nearest ancestor of ``start`` holding ``pyproject.toml`` or ``.git``."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").exists() or (directory / ".git").exists():
            return directory
    return None


def _pyproject_values(start: Path) -> dict[str, Any]:
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
    out: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.upper()
        if key.startswith(PREFIX):
            key = key[len(PREFIX):]
        if key not in KEYS:
            raise ConfigurationError(
                f"unknown setting {raw_key!r} under [tool.headwater] in {path}; "
                f"expected one of {', '.join(k.lower() for k in KEYS)}"
            )
        out[key] = value
    return out
