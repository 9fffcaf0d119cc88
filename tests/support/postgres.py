"""A throwaway PostgreSQL cluster for the test suite.

Usage::

    with PostgresCluster() as cluster:
        cluster.create_database("t1")
        engine = sqlalchemy.create_engine(cluster.url("t1"))
        ...
        cluster.drop_database("t1")

The cluster lives in a fresh temporary directory, listens on 127.0.0.1 on a free
port (plus a unix socket inside the temporary directory) with trust auth for the
``postgres`` superuser, and is tuned for speed, not durability (fsync off etc.).
Stopping it (``pg_ctl stop -m fast``) and deleting the directory always happens on
exit from the ``with`` block, and also at interpreter exit as a safety net.

PostgreSQL binaries (``initdb``, ``pg_ctl``) are looked up on ``PATH`` first, then
in the newest ``/usr/lib/postgresql/*/bin``. If none are found a ``RuntimeError``
is raised: the suite must not silently skip Postgres. ``available()`` lets a
developer decide to skip instead.

initdb refuses to run as root, so when the effective uid is 0 the server commands
run as the ``postgres`` user via ``runuser -u postgres --`` and the temporary
directory is chowned to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["PostgresCluster", "available", "find_bin_dir"]

SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds to wait for the server to accept connections
STOP_TIMEOUT = 30.0

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin. Install them with: "
    "apt-get install -y --no-install-recommends postgresql"
)

# Settings written to postgresql.conf; the port is passed on the command line
# so that a start can be retried on another port if it was taken meanwhile.
_SERVER_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric sort on <version>
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bin_dir() -> Path | None:
    """Directory holding both ``initdb`` and ``pg_ctl``, or None."""
    on_path = shutil.which("initdb")
    if on_path:
        # Prefer the pg_ctl next to the (resolved) initdb so versions match.
        for candidate in (Path(on_path).parent, Path(on_path).resolve().parent):
            if os.access(candidate / "pg_ctl", os.X_OK):
                return candidate
        pg_ctl = shutil.which("pg_ctl")
        if pg_ctl and Path(pg_ctl).parent == Path(on_path).parent:
            return Path(on_path).parent
    dirs = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if os.access(d / "initdb", os.X_OK) and os.access(d / "pg_ctl", os.X_OK)
    ]
    if dirs:
        return max(dirs, key=_version_key)
    return None


def available() -> bool:
    """True if PostgreSQL server binaries were found (for an optional skip)."""
    return find_bin_dir() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A temporary PostgreSQL server; use as a context manager."""

    def __init__(self) -> None:
        self.bin_dir: Path | None = None
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.log_file: Path | None = None
        self.port: int | None = None
        self.pid: int | None = None  # postmaster pid while running
        self._as_root = os.geteuid() == 0
        self._running = False
        self._atexit_registered = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.base_dir is not None:
            raise RuntimeError("cluster already started")
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bin_dir = bin_dir
        if self._as_root and shutil.which("runuser") is None:
            raise RuntimeError("running as root but `runuser` is not available")

        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self.base_dir = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
            self.data_dir = self.base_dir / "data"
            self.socket_dir = self.base_dir / "sock"
            self.log_file = self.base_dir / "server.log"
            self.socket_dir.mkdir()
            if self._as_root:
                try:
                    shutil.chown(self.base_dir, user=SUPERUSER, group=None)
                    shutil.chown(self.socket_dir, user=SUPERUSER, group=None)
                except LookupError as e:
                    raise RuntimeError(
                        f"running as root but there is no `{SUPERUSER}` user to run "
                        "PostgreSQL as (installing the postgresql package creates it)"
                    ) from e
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the temp dir. Idempotent."""
        try:
            # postmaster.pid also covers a start interrupted inside pg_ctl.
            if self._running or (
                self.base_dir is not None
                and self.data_dir is not None
                and (self.data_dir / "postmaster.pid").exists()
            ):
                if self.pid is None:
                    self.pid = self._read_pid()
                self._stop_server()
        finally:
            self._running = False
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False

    # -- public helpers ----------------------------------------------------

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for database ``dbname``."""
        self._require_running()
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", *, autocommit: bool = False) -> psycopg.Connection:
        """A plain psycopg connection to ``dbname`` (caller closes it)."""
        self._require_running()
        return psycopg.connect(
            host=HOST, port=self.port, user=SUPERUSER, dbname=dbname, autocommit=autocommit
        )

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE name [TEMPLATE template].

        PostgreSQL refuses to copy a template that has open connections, so
        dispose of engines connected to ``template`` first.
        """
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.connect(autocommit=True) as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        """Terminate other connections to ``name`` and drop it (if it exists)."""
        with self.connect(autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            if conn.info.server_version >= 130000:
                query = sql.SQL("{} WITH (FORCE)").format(query)
            conn.execute(query)

    # -- internals ---------------------------------------------------------

    def _require_running(self) -> None:
        if not self._running:
            raise RuntimeError("cluster is not running")

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None and self.base_dir is not None
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        # Keep stray PG* variables (PGDATA, PGPORT, ...) from steering the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            cmd,
            cwd=self.base_dir,  # readable by the postgres user
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _initdb(self) -> None:
        assert self.data_dir is not None and self.socket_dir is not None
        res = self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", SUPERUSER,
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        settings = dict(_SERVER_SETTINGS)
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# tests/support/postgres.py\n" + lines)

    def _start_server(self) -> None:
        assert self.data_dir is not None and self.log_file is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_error = ""
        for _attempt in range(3):  # retry if the free port got taken meanwhile
            self.port = _free_port()
            remaining = max(1, int(deadline - time.monotonic()))
            res = self._run(
                "pg_ctl", "start",
                "-D", str(self.data_dir),
                "-l", str(self.log_file),
                "-o", f"-p {self.port}",
                "-w", "-t", str(remaining),
                timeout=remaining + 10,
            )  # fmt: skip
            self.pid = self._read_pid()
            if res.returncode == 0:
                self._running = True
                self._wait_ready(deadline)
                return
            # pg_ctl may have left a postmaster behind (e.g. on timeout).
            if self.pid is not None:
                self._running = True
                self._stop_server()
                self._running = False
            log = self._read_log()
            last_error = f"pg_ctl start failed ({res.returncode}):\n{res.stdout}{res.stderr}\n{log}"
            if "could not bind" not in log and "already in use" not in log:
                break
            if time.monotonic() >= deadline:
                break
        raise RuntimeError(last_error)

    def _wait_ready(self, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    host=HOST, port=self.port, user=SUPERUSER, dbname="postgres",
                    connect_timeout=2,
                ) as conn:  # fmt: skip
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(
            f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f}s: {last}\n"
            f"{self._read_log()}"
        )

    def _stop_server(self) -> None:
        assert self.data_dir is not None
        try:
            res = self._run(
                "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast",
                "-w", "-t", str(int(STOP_TIMEOUT)),
                timeout=STOP_TIMEOUT + 10,
            )  # fmt: skip
            ok = res.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok and self.pid is not None:
            # Last resort: immediate shutdown, then kill.
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, sig)
                    time.sleep(0.5)

    def _read_pid(self) -> int | None:
        assert self.data_dir is not None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first.strip())
        except (OSError, ValueError):
            return None

    def _read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:] if self.log_file else ""
        except OSError:
            return ""
