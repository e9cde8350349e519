"""The dashboard answers only to Host names it knows (no DNS rebinding).

A web page can point a name of its own (``evil.example``) at 127.0.0.1 and then read
``http://evil.example:4200/`` from the victim's browser: the request reaches the
dashboard with ``Host: evil.example:4200``. The dashboard answers such requests 421
Misdirected Request, on every path and method, before reading the store. These tests
run a real server on loopback and send raw requests with forged Host headers.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
from typing import Iterator

import pytest

from headwater import flow
from headwater.session import Session

pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')

from headwater.plugins.dashboard.server import DashboardServer, make_server  # noqa: E402

SECRET = "secret-run-name"


@flow(flow_run_name=SECRET)
def private(api_token: str = "hunter2") -> int:
    return 1


def request(port: int, path: str, host: str | None, method: str = "GET",
            address: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    """One raw HTTP request with exactly the given Host header (None: no Host header)."""
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
    finally:
        conn.close()


class Running:
    def __init__(self, server: DashboardServer) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def board(headwater_session: Session) -> Iterator[Running]:
    """A dashboard on 127.0.0.1 over a store holding one run whose name is the secret."""
    private()
    headwater_session.store.flush()
    running = Running(make_server(headwater_session, "127.0.0.1", 0))
    yield running
    running.close()


def _run_path(board: Running) -> str:
    status, _, body = request(board.port, "/api/flow-runs", "localhost")
    assert status == 200, body
    import json

    return "/runs/" + json.loads(body)["flow_runs"][0]["id"]


FORGED = ["evil.example", "evil.example:4200", "127.0.0.1.evil.example", "localhost.evil.example:4200",
          "EVIL.example", "[::1].evil.example", "evil.example:80@localhost", "", None]


@pytest.mark.parametrize("host", FORGED, ids=[repr(h) for h in FORGED])
def test_a_forged_host_is_answered_421_on_every_path(board: Running, host: str | None) -> None:
    """Pages, the JSON API, a run's page, static files, unknown paths and refused methods
    all answer 421 with a short plain-text body that leaks nothing from the store."""
    paths = ["/", "/runs", "/api/", "/api/flows", "/api/flow-runs", _run_path(board), "/cache",
             "/static/dashboard.css", "/no-such-page"]
    for path in paths:
        for method in ("GET", "HEAD", "POST"):
            status, headers, body = request(board.port, path, host, method)
            assert status == 421, (path, method, status)
            assert headers["Content-Type"].startswith("text/plain")
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert SECRET not in body and "hunter2" not in body
            if method == "GET":
                assert body.startswith("Misdirected request") and len(body) < 400
                assert "--allow-host" in body


ALLOWED = ["localhost", "localhost:4200", "LocalHost", "127.0.0.1", "127.0.0.1:{port}", "[::1]",
           "[::1]:{port}"]


@pytest.mark.parametrize("host", ALLOWED)
def test_loopback_names_with_or_without_a_port_are_answered(board: Running, host: str) -> None:
    """localhost, 127.0.0.1 and [::1], with any port or none, get the dashboard."""
    host = host.format(port=board.port)
    status, headers, body = request(board.port, "/api/flow-runs", host)
    assert status == 200 and SECRET in body
    assert "script-src" not in headers["Content-Security-Policy"]
    assert request(board.port, "/", host)[0] == 200
    assert request(board.port, "/static/dashboard.css", host)[0] == 200


def test_allowed_hosts_and_the_listening_address_are_answered(headwater_session: Session) -> None:
    """Names given as allowed hosts are answered (any port, any case); the address the
    server listens on is answered; other names still get 421."""
    try:
        server = make_server(headwater_session, "127.0.0.2", 0, allowed_hosts=["dash.internal:8080", "[fe80::1]"])
    except OSError:
        pytest.skip("cannot listen on 127.0.0.2 here")
    running = Running(server)
    try:
        port = running.port
        for host in ("dash.internal", "DASH.internal:9999", "[fe80::1]:4200", f"127.0.0.2:{port}", "localhost"):
            assert request(port, "/api/flows", host, address="127.0.0.2")[0] == 200, host
        for host in ("evil.example", "dash.internal.evil.example", "127.0.0.3", "fe80::1.evil"):
            assert request(port, "/api/flows", host, address="127.0.0.2")[0] == 421, host
    finally:
        running.close()


def test_the_ui_command_takes_allow_host(headwater_home, tmp_path) -> None:
    """`headwater ui --allow-host NAME` (repeatable) serves NAME and the loopback names and
    refuses others; a bad --allow-host value is a usage error naming it."""
    env = {**os.environ, "HEADWATER_HOME": str(headwater_home)}
    bad = subprocess.run([sys.executable, "-m", "headwater.cli", "ui", "--port", "0", "--allow-host", "a/b"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "invalid host name 'a/b'" in bad.stderr

    proc = subprocess.Popen([sys.executable, "-m", "headwater.cli", "ui", "--port", "0",
                             "--allow-host", "dash.internal", "--allow-host", "other.internal:8000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "headwater dashboard on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        for host in ("dash.internal", "other.internal:80", f"localhost:{port}"):
            assert request(port, "/api/flows", host)[0] == 200, host
        assert request(port, "/api/flows", "evil.example")[0] == 421
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
