"""Who may open the library: the SQLite database is created for its owner only,
or for its folder's group where the folder is shared with one (the system
service's `/var/lib/labelsd`, mode 2770 `labelsd:labels`); and a person who is
refused gets one line saying which group to join instead of a traceback.

Used by the store (creating and opening the file) and by the CLI's error
boundary (any other `PermissionError`). Imports nothing heavy.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import stat
from pathlib import Path

from labelsd.errors import StoreUnavailable
from labelsd.paths import shown

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700  # a database folder labelsd creates: the owner's alone
PRIVATE_FILE_MODE = 0o600
GROUP_FILE_MODE = 0o660  # in a folder its group may write: the group's too


def database_file_mode(folder: Path) -> int:
    """The mode for a new database file in `folder`: owner read-write, plus
    group read-write when the folder lets its group in and write (so the
    members can tag: SQLite writes its -wal and -shm files beside the database
    with the database file's own mode)."""
    mode = folder.stat().st_mode
    group_writes = mode & (stat.S_IWGRP | stat.S_IXGRP) == stat.S_IWGRP | stat.S_IXGRP
    return GROUP_FILE_MODE if group_writes else PRIVATE_FILE_MODE


def where_shown(db: str) -> str:
    """The database as messages and `labels status` name it: a URL's password left out."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)


def require_database_file(path: Path, default_db: str | None = None) -> None:
    """The SQLite file of an existing library must be there: a command that reads
    or changes a library never creates one (only the service, `labels scan` and
    `labels db copy`'s target do), so a mistyped --db is one line, not a new
    empty library. Raises StoreUnavailable naming the default database."""
    try:
        if path.is_dir():
            raise StoreUnavailable(
                f"database {path} is a directory; give a file path such as {path / 'labels.db'}")
        there = path.exists()
    except PermissionError as err:  # a folder on the way does not let us in
        raise StoreUnavailable(denied_advice(path)) from err
    if not there:
        hint = (f" (the default one is {default_db})"
                if default_db and os.path.abspath(default_db) != os.path.abspath(path) else "")
        raise StoreUnavailable(f"no database at {path}{hint}; labelsd creates it when it "
                               "first starts (or labels scan DIR does), or pass --db")


def prepare_database_file(path: Path) -> None:
    """Make sure the SQLite file `path` can be opened, creating its folder (mode
    0700) and the empty file (an empty file is a valid SQLite database) with
    `database_file_mode`, whatever the umask. A file already there keeps the
    mode its owner gave it. Raises StoreUnavailable with one line of advice."""
    try:
        if path.is_dir():
            raise StoreUnavailable(
                f"database {path} is a directory; give a file path such as {path / 'labels.db'}")
    except PermissionError as err:  # a folder on the way does not let us in
        raise StoreUnavailable(denied_advice(path)) from err
    try:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    except OSError as err:
        raise StoreUnavailable(
            f"cannot create the database folder {path.parent}: {err.strerror}; "
            "check that the parent directory exists and is writable") from err
    try:
        mode = database_file_mode(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        fd = None
    except PermissionError as err:  # a folder we may not write in
        raise StoreUnavailable(denied_advice(path.parent, "the database folder")) from err
    if fd is not None:
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away
        finally:
            os.close(fd)
        log.debug("created the database file %s with mode %04o", shown(path), mode)
    if not os.access(path, os.R_OK):
        raise StoreUnavailable(denied_advice(path))


def _nearest_visible(path: Path) -> tuple[Path, os.stat_result] | None:
    """The path itself or its nearest ancestor this process can stat."""
    for candidate in (path, *path.parents):
        try:
            return candidate, candidate.stat()
        except OSError:
            continue
    return None


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _me() -> str:
    return _name(pwd.getpwuid, os.getuid())


def _listed_in(gid: int, user: str) -> bool:
    """Whether the group database lists `user` in group `gid` (which this
    process's groups may not show yet: they are fixed at login)."""
    try:
        return user in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def denied_advice(path: str | os.PathLike, what: str = "the database") -> str:
    """One line for a refused `path`: which group to join when the refusing
    file or folder gives its group more than everyone else, else whose it is."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    head = f"cannot open {what} {path}: permission denied"
    found = _nearest_visible(path)
    if found is None:
        return head
    where, st = found
    owner = _name(pwd.getpwuid, st.st_uid)
    group = _name(grp.getgrgid, st.st_gid)
    joining_helps = (st.st_mode >> 3) & 0o7 & ~st.st_mode  # the group may do what others may not
    in_group = st.st_gid in os.getgroups() or st.st_gid == os.getgid()
    if joining_helps and not in_group:
        if _listed_in(st.st_gid, _me()):  # added since this session began
            return (f"{head}; you were added to the group {group!r} after you logged in: "
                    f"log in again (or start a shell with `newgrp {group}`)")
        return (f"{head}; it is shared with the group {group!r}: ask an administrator to add "
                f"you (sudo usermod -aG {group} {_me()}), then log in again")
    if joining_helps:
        return (f"{head}; you are in its group {group!r}, but {where} does not give the group "
                f"that access (ask {owner} or an administrator)")
    whose = f"{where} is {owner}'s alone" if not st.st_mode & 0o077 else f"{where} belongs to {owner}"
    if "database" in what:
        return f"{head}; {whose}: use a database of your own (--db FILE) or ask {owner}"
    return f"{head}; {whose}"
