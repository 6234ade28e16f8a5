"""The SQLite file under a running service.

One service per file: SQLite is for one machine, and two services sharing one
file would claim, write and count over each other through one lock. The service
takes an exclusive `flock` on `<db>.service-lock` beside the file (released by
the kernel when the process ends, however it ends); a second `labelsd` on the
same file is refused with one line. `labels` commands, `labels scan` included,
do not take it: they may open the file while the service runs.

The file must stay the one the service opened. Deleted or replaced under a
running service (`rm labels.db`, a restore from a backup copied over it), the
service would keep writing into an unlinked inode, and everything it labels from
then on would be lost. The heartbeat compares the path's device and inode with
the ones at start; a difference stops the service with an error, so that
systemd (Restart=on-failure) starts it again on the new file, whose start-up
scan queues every photo again.
"""

from __future__ import annotations

import fcntl
import logging
import os

from labelsd.errors import StoreUnavailable
from labelsd.store.engine import Store

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".service-lock"


class DatabaseLost(StoreUnavailable):
    """The database file was deleted or replaced while the service ran."""


class ServedFile:
    """The SQLite file one service holds. `claim()` it at start, `check()` it on
    each heartbeat, `release()` it at stop. Only for SQLite stores: see `of()`."""

    def __init__(self, path: str):
        self.path = path
        self.lock_path = path + LOCK_SUFFIX
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    @classmethod
    def of(cls, store: Store) -> ServedFile | None:
        """The file of a SQLite store; None for a server database (PostgreSQL
        serves several services by design)."""
        if store.dialect != "sqlite" or not store.engine.url.database:
            return None
        return cls(os.path.realpath(store.engine.url.database))

    def claim(self) -> None:
        """Take the one-service lock and remember which file this is; a
        StoreUnavailable that says who holds it when another service does."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StoreUnavailable(f"cannot open {self.lock_path}: {err.strerror}; is another "
                                   "user's labelsd serving this database?") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreUnavailable(
                f"another labelsd (pid {holder}) already serves the database {self.path}; "
                "a SQLite database is for one service on one machine: stop that one, or move "
                "the library to PostgreSQL for several (README: 'Several machines')") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """DatabaseLost when the path no longer names the file claimed at start."""
        now = self._stat()
        if now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        raise DatabaseLost(
            f"the database {self.path} was {what} while labelsd was running; what it "
            "labels would be lost, so it stops (systemd starts it again on the new file, "
            "and its start-up scan queues the photos again)")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


__all__ = ["LOCK_SUFFIX", "DatabaseLost", "ServedFile"]
