"""``headwater ui``: a read-only web dashboard over the run store.

Flows (with their markdown descriptions), flow runs, a flow run's task runs as a
timeline, task runs, cache entries and run logs, as HTML pages and as JSON under
``/api/``. It needs the ``ui`` extra (``pip install "headwater[ui]"``) for markdown; the
server is the standard library's. It binds to 127.0.0.1 unless ``--host`` says otherwise.

This module only adds the command; the server is imported when the command runs, so
loading the plugin costs a session nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from headwater.plugin_manager import hookimpl

if TYPE_CHECKING:
    import argparse

INSTALL = 'pip install "headwater[ui]"'


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535 "
                                         f"(0 picks a free one)")
    return int(text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    try:
        import markdown_it  # noqa: F401  (the one dependency of the ui extra)
    except ImportError:
        print(f"headwater: error: `headwater ui` needs the dashboard's dependencies, which are not "
              f"installed. Install them with:\n\n    {INSTALL}\n", file=sys.stderr)
        return 1
    from headwater.session import Session

    from .server import make_server

    session = Session.current()
    try:
        server = make_server(session, args.host, args.port, verbose=args.verbose)
    except OSError as exc:
        print(f"headwater: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}. "
              f"Pick another port with --port (0 picks a free one).", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    url = f"http://{shown}:{port}/"
    print(f"headwater dashboard on {url} (run store {session.settings.database_url}); "
          f"Ctrl+C stops it.", flush=True)
    if not is_loopback(args.host):
        print(f"headwater: warning: listening on {args.host}, not only on this machine: anyone who can "
              f"reach it can read your run history (there is no login).", file=sys.stderr, flush=True)
    if args.open:
        import threading
        import webbrowser

        # A wildcard address is not one a browser can open: use this machine's.
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}
        browse = url.replace(f"//{shown}:", f"//{wildcard[str(host)]}:") if str(host) in wildcard else url
        threading.Timer(0.3, webbrowser.open, args=(browse,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nheadwater dashboard stopped.")
    finally:
        server.server_close()
    return 0


@hookimpl
def headwater_add_commands(cli: Any) -> None:
    ui = cli.add_parser("ui", help="serve a read-only web dashboard over the run store",
                        description=f"Serve a read-only web dashboard over the run store. Needs: {INSTALL}")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=_port, default=4200, help="port (default 4200; 0 picks a free one)")
    ui.add_argument("--open", action="store_true", help="open the dashboard in a web browser")
    ui.add_argument("--verbose", action="store_true", help="log every request")
    ui.set_defaults(func=cmd_ui)
