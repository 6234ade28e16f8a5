"""The inotify watch limit: is there room for one more watch?

watchdog watches a tree with one inotify watch per folder. When the user's
watches run out (``fs.inotify.max_user_watches``, or ``user.max_inotify_watches``
in a user namespace), it raises for the root folder itself, but a subfolder
that cannot be watched is skipped without a word, at start and whenever a
folder is created later: files landing there would go unseen until the next
start. The watcher therefore asks, after watching a root and after folders
appear, whether one more watch can still be added; when none can, the limit
was reached and the root is polled instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os

from labelsd.paths import shown

log = logging.getLogger(__name__)

WATCH_LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)
_IN_ATTRIB = 0x00000004  # any mask will do: the watch is removed at once

_libc: ctypes.CDLL | None = None


def _inotify_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def inotify_has_room(folder: str) -> bool:
    """True unless adding one inotify watch on `folder` fails because this user's
    watches (or inotify instances) are used up. Any other failure (the folder
    vanished, inotify missing) is not the limit, and answers True."""
    try:
        libc = _inotify_libc()
        fd = libc.inotify_init1(os.O_CLOEXEC)
    except (OSError, AttributeError) as err:  # no libc symbol: not Linux
        log.debug("cannot probe the inotify limit: %s", err)
        return True
    if fd < 0:  # out of inotify instances: the watches cannot be probed
        log.debug("cannot probe the inotify limit: %s", os.strerror(ctypes.get_errno()))
        return True
    try:
        wd = libc.inotify_add_watch(fd, os.fsencode(folder), _IN_ATTRIB)
        return wd >= 0 or ctypes.get_errno() != errno.ENOSPC
    finally:
        os.close(fd)  # removes the probe's watch with the instance


def limit_warning(root: str, reason: str) -> str:
    """The one line logged when `root` is polled because of the limit."""
    return (f"the inotify watch limit is reached ({reason}) while watching {shown(root)}; polling it "
            "instead. Raise fs.inotify.max_user_watches (and fs.inotify.max_user_instances), "
            "e.g. `sysctl fs.inotify.max_user_watches=524288`, then restart labelsd")
