"""``headwater ui``: a read-only web dashboard over the run store.

Flows (with their markdown descriptions), flow runs (searched and filtered), a flow
run's progress, task runs as a timeline and dependency graph, task runs, cache entries
and run logs, as HTML pages and as JSON under ``/api/``; a big run's task runs and logs
a page at a time. It needs the ``ui`` extra (``pip install "headwater[ui]"``) for markdown; the
server is the standard library's. It binds to 127.0.0.1 unless ``--host`` says otherwise.

This module only adds the command; the server is imported when the command runs, so
loading the plugin costs a session nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from headwater.plugin_manager import hookimpl
from headwater.settings import hide_password

if TYPE_CHECKING:
    import argparse

INSTALL = 'pip install "headwater[ui]"'


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number from 0 to 65535 "
                                         f"(0 picks a free one)")
    return int(text)


#: The names a browser on this machine uses for it; always accepted as ``Host``.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(value: str) -> str | None:
    """The name in a ``Host`` header (or an ``--allow-host`` value), lower case and
    without brackets or port: ``"LocalHost:4200"`` -> ``"localhost"``, ``"[::1]:80"`` ->
    ``"::1"``. ``None`` for text that is not a host (a bad port, a stray bracket)."""
    text = value.strip().lower()
    if text.startswith("["):  # an IPv6 address: [::1] or [::1]:4200
        name, bracket, port = text[1:].partition("]")
        if not bracket or not name or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        return name
    if text.count(":") > 1:
        return text  # a bare IPv6 address (as an --allow-host value or --host)
    name, _, port = text.partition(":")
    if not name or (port and not port.isdigit()) or any(c in name for c in "/@[]\\ "):
        return None
    return name


def _allowed_host(text: str) -> str:
    """An argparse type for ``--allow-host``: a host name or address, with or without port."""
    import argparse

    if host_name(text) is None:
        raise argparse.ArgumentTypeError(f"invalid host name {text!r}: expected a name or address such "
                                         f"as dash.example.com, 192.168.1.5 or [fe80::1], optionally "
                                         f"with :PORT")
    return text


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
        server = make_server(session, args.host, args.port, verbose=args.verbose,
                             allowed_hosts=args.allow_host or ())
    except OSError as exc:
        print(f"headwater: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}. "
              f"Pick another port with --port (0 picks a free one).", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    url = f"http://{shown}:{port}/"
    print(f"headwater dashboard on {url} (run store {hide_password(session.settings.database_url)}); "
          f"Ctrl+C stops it.", flush=True)
    if not is_loopback(args.host):
        print(f"headwater: warning: listening on {args.host}, not only on this machine: anyone who can "
              f"reach it can read your run history (there is no login). It answers only to "
              f"localhost, 127.0.0.1, [::1], {args.host} and --allow-host names.",
              file=sys.stderr, flush=True)
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
    ui.add_argument("--allow-host", action="append", metavar="NAME", type=_allowed_host,
                    help="also answer requests for this host name (e.g. the name a proxy or "
                         "other machines use); repeat for more. Always answered: localhost, "
                         "127.0.0.1, [::1] and the --host address; any other Host gets 421")
    ui.add_argument("--verbose", action="store_true", help="log every request")
    ui.set_defaults(func=cmd_ui)
