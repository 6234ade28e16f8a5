"""A throwaway PostgreSQL cluster for tests.

`PgServer` runs `initdb` into a fresh temporary folder and starts `postgres`
listening only on a unix socket in that folder (no TCP port, so nothing else on
the machine can reach it and two test runs never collide). Durability is off
(fsync, synchronous_commit, full_page_writes): the cluster lives for one test
session and is deleted afterwards. `PgServer(durable=True)` keeps PostgreSQL's
defaults (benchmarks: the figure an operator gets).

PostgreSQL refuses to run as root. When the tests run as root, the server runs
as the `postgres` user that the Debian package creates (else `nobody`), and the
folder is handed to that user; root still connects through the socket.

    with PgServer() as pg:
        url = pg.create_database("test_1")   # postgresql+psycopg://...

`find_bindir()` says whether the binaries are installed at all (None if not).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0


class PgServerError(RuntimeError):
    """The cluster could not be created or started (the message carries its log)."""


def find_bindir() -> Path | None:
    """The folder holding initdb and postgres: $PG_BINDIR alone when set, else
    PATH, then the Debian layout /usr/lib/postgresql/<version>/bin (newest
    first). None if absent."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
        return candidates[0] if (candidates[0] / "initdb").is_file() else None
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                    reverse=True)
    candidates += [Path(p) for p in debian]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgServerError("running as root and there is no 'postgres' or 'nobody' account "
                        "to run PostgreSQL as")


class PgServer:
    """One temporary cluster. `start()`/`stop()`, or use it as a context manager;
    `stop()` is safe to call twice and removes the folder."""

    def __init__(self, bindir: Path | None = None, max_connections: int = 300,
                 durable: bool = False):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PgServerError("PostgreSQL server binaries (initdb, postgres) not found; "
                                "install the 'postgresql' package or set PG_BINDIR")
        self.max_connections = max_connections
        self.durable = durable  # fsync and synchronous commits as PostgreSQL ships (benchmarks)
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self._user = _run_as()

    # ---- paths and URLs ------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        assert self.folder is not None, "server not started"
        return self.folder

    @property
    def data_dir(self) -> Path:
        return self.socket_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.socket_dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database in this cluster (over the unix socket)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def conninfo(self, database: str = "postgres") -> str:
        """libpq connection string (for psycopg.connect)."""
        return f"host={self.socket_dir} user={SUPERUSER} dbname={database}"

    # ---- life cycle ----------------------------------------------------------

    def _popen_kwargs(self) -> dict:
        kwargs: dict = {"start_new_session": True}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    def start(self) -> PgServer:
        if self.process is not None:
            return self
        # Short path in /tmp: a unix socket path must stay under ~100 bytes, and the
        # server's account must be able to reach it (pytest's tmp dirs are 0700 root).
        self.folder = Path(tempfile.mkdtemp(prefix="labelsd-pg-"))
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        self.folder.chmod(0o700)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        init = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, env=env, cwd=self.folder, **self._popen_kwargs())
        if init.returncode != 0:
            self._remove_folder()
            raise PgServerError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")
        settings = {
            "listen_addresses": "",                    # unix socket only
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
            **({} if self.durable else
               {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}),
            "shared_buffers": "64MB",
            "timezone": "UTC",
            "log_min_messages": "warning",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.log_file, "ab")  # noqa: SIM115 (handed to the child)
        try:
            if self._user is not None:
                os.chown(self.log_file, self._user.pw_uid, self._user.pw_gid)
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, cwd=self.folder,
                                            **self._popen_kwargs())
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log_file.read_text(errors="replace")
                self.stop()
                raise PgServerError(f"postgres exited with {self.process.returncode}:\n{text}")
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError as err:
                last = err
                time.sleep(0.05)
        text = self.log_file.read_text(errors="replace")
        self.stop()
        raise PgServerError(f"postgres did not accept connections within "
                            f"{START_TIMEOUT_S:.0f}s ({last}):\n{text}")

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            # FILE_COPY: with fsync off it is much faster than WAL-logging the template.
            conn.execute(sql.SQL("CREATE DATABASE {} STRATEGY FILE_COPY")
                         .format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still in it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGINT: "fast" shutdown (disconnect clients, no checkpoint wait on us).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
