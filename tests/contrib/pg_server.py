"""A real PostgreSQL server on loopback for the tests: Debian's ``postgresql`` binaries,
a cluster made by ``initdb`` in a temporary directory, ``postgres`` on a free port, stopped
when the tests are done.

``initdb`` and ``postgres`` refuse to run as root; when the tests run as root, both run as
the ``postgres`` system user (``runuser -u postgres --``), in a directory given to it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: The user the server knows the tests by (its superuser; trust authentication on loopback).
USER = "headwater"

#: Settings that make the server fast for tests. Each one only gives up safety against a
#: crash of the operating system: queries, transactions, locks and commits (visible to
#: every other connection once they return) behave as on a production server.
FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # Four processes with connection pools, a dashboard and the test itself at once.
    "max_connections": "200",
}


#: Where Debian's postgresql packages put the server binaries, one directory per version.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def version_of(bindir: Path) -> tuple[int, ...]:
    """The version in a Debian bin directory's path (``/usr/lib/postgresql/15/bin``), for
    ordering them newest first; ``()`` when the path names none."""
    match = re.search(r"postgresql/(\d+(?:\.\d+)*)/bin", str(bindir))
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def candidate_bindirs() -> list[Path]:
    """Directories that may hold ``postgres`` and ``initdb``, in the order they are tried:
    ``PATH``, ``pg_config --bindir``, then ``/usr/lib/postgresql/*/bin`` newest first."""
    found: list[Path] = []
    on_path = shutil.which("postgres")
    if on_path:
        # A symlink (Debian's /usr/local/bin/postgres): the real directory holds initdb too.
        found.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                found.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    found.extend(sorted((Path(p) for p in glob.glob(DEBIAN_BINDIRS)), key=version_of, reverse=True))
    return list(dict.fromkeys(found))


def find_bindir() -> Path | None:
    """The first directory with both ``postgres`` and ``initdb``, or ``None``."""
    for bindir in candidate_bindirs():
        if all(os.access(bindir / name, os.X_OK) for name in ("postgres", "initdb")):
            return bindir
    return None


class PostgresServer:
    """One PostgreSQL server of the tests' own: ``start()`` makes a cluster in a temporary
    directory and serves it on 127.0.0.1 and a free port; ``create_database()`` gives a
    fresh empty database's URL; ``stop()`` shuts it down and removes the directory.
    Usable as a context manager."""

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.port = 0
        self.base: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._created = 0

    # -- paths and URLs ----------------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.base is not None, "the server was not started"
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "the server was not started"
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """``postgresql://headwater@127.0.0.1:<port>/<dbname>``."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- starting and stopping ---------------------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        """``argv`` as the user that may run the server: this one, or ``postgres`` for root."""
        if os.geteuid() != 0:
            return argv
        if shutil.which("runuser") is None:
            raise RuntimeError("postgres refuses to run as root, and runuser (util-linux), which would run "
                               "it as the postgres user, is not installed")
        return ["runuser", "-u", "postgres", "--", *argv]

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """Make the cluster and start the server; return once it accepts connections."""
        # A directory of its own under the system's temporary directory (not pytest's,
        # whose parents only root may enter): the postgres user must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="headwater-pg-"))
        sockets = self.base / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            try:
                for path in (self.base, sockets):
                    shutil.chown(path, "postgres", "postgres")
            except LookupError:
                self._remove()
                raise RuntimeError("postgres refuses to run as root, and there is no postgres user to run it "
                                   "as (Debian's postgresql package makes one)") from None
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        init = subprocess.run(
            self._as_server_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                                  "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]),
            cwd=self.base, env=env, capture_output=True, text=True, timeout=timeout)
        if init.returncode != 0:
            self._remove()
            raise RuntimeError(f"initdb failed with {init.returncode}: {init.stderr[-2000:] or init.stdout[-2000:]}")
        self.port = free_port()
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        """Start the server on the cluster made by ``start`` and wait until it is ready."""
        assert self.base is not None
        sockets = self.base / "sockets"
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        # The log goes to a file: a pipe nobody reads would fill and stop the server.
        with open(self.log_path, "wb") as log:
            # A session of its own: stop() can reach every server process by its group.
            self.process = subprocess.Popen(self._as_server_user(argv), cwd=self.base, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: every session is ended) and start it again on
        the same port and data, as an administrator's restart or a failover does."""
        process, self.process = self.process, None
        assert process is not None, "the server was not started"
        pid = self._postmaster_pid()
        os.kill(pid if pid is not None else process.pid, signal.SIGINT)
        process.wait(timeout)
        self._launch(timeout)

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's Unix socket."""
        assert self.base is not None, "the server was not started"
        return self.base / "sockets"

    def _wait_until_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:  # not listening yet, or still starting up
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections on port {self.port} "
                                       f"within {timeout:.0f} s ({exc}):\n{self.log()}") from None
                time.sleep(0.1)

    def _postmaster_pid(self) -> int | None:
        """The server's own pid (the first line of ``postmaster.pid``): under ``runuser``
        the process this one started is runuser, which would not pass a signal on as is."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: sessions are ended, no waiting for clients); if the server
        is still there after ``timeout`` seconds, kill all its processes. Then remove the
        cluster's directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            pid = self._postmaster_pid()
            try:
                os.kill(pid if pid is not None else process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        self._remove()

    def _remove(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> PostgresServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database (``CREATE DATABASE``); its URL."""
        import psycopg

        self._created += 1
        name = f"{prefix}_{os.getpid()}_{self._created}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> bool:
        """Drop the database of ``url`` if nobody is connected to it any more (a store left
        open by a test keeps it: it goes with the cluster); whether it was dropped."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        try:
            with psycopg.connect(self.url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except psycopg.Error:
            return False
        return True
