"""Whether a service node's process still exists, for nodes of this host.

A node row is written by a labelsd process; `labels status` and a starting
labelsd (taking over the claims of one that died) ask whether that process is
still there. Only a node of this host can be asked; one of another host (a
PostgreSQL library shared by several) is judged by its heartbeat alone.
Standard library only: `labels status` reads through the light reader and must
not pay for more.
"""

from __future__ import annotations

import os
import socket


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    return True


def process_gone(host: str, pid: int) -> bool:
    """True when the node ran on this host and its process is no longer there
    (kill -9, a crash during its start): not running, however fresh its heartbeat."""
    return host == socket.gethostname() and not pid_alive(pid)


__all__ = ["pid_alive", "process_gone"]
