"""The ``headwater`` command. Imported only by the console script, never by
``import headwater``. Subcommands come from plugins (``headwater_add_commands``); the
built-in ones live in ``headwater.plugins.cli_commands``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from . import __version__
from .errors import HeadwaterError
from .session import Session


class CommandParser(argparse.ArgumentParser):
    """Bad arguments are one line, as every other error of the command is: what was
    wrong, and where the usage is. Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        command = self.prog[len("headwater "):] if self.prog.startswith("headwater ") else ""
        where = f"{command}: " if command else ""
        self.exit(2, f"headwater: error: {where}{message} (`{self.prog} --help` shows the usage)\n")


def build_parser(session: Session) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="headwater",
        description="Inspect and run headwater flows: run history, cache, plugins.",
    )
    parser.add_argument("--version", action="version", version=f"headwater {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    session.pm.hook.headwater_add_commands(cli=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The plugin listing must work even when a plugin is broken, to show which one.
    strict = not (args_list[:1] == ["plugins"])
    session = Session(strict=strict)
    try:
        with session:
            parser = build_parser(session)
            args = parser.parse_args(args_list)
            func = getattr(args, "func", None)
            if func is None:
                parser.print_help()
                return 2
            return int(func(args) or 0)
    except HeadwaterError as exc:
        print(f"headwater: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
