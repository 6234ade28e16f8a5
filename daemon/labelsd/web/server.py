"""Running `labels serve`: the address, the token, uvicorn, and a clean end.

The socket is bound here, before uvicorn starts, so that an address in use or
not ours is one line and exit 1, and so that `--port 0` (any free port) prints
the port it got. The ready line goes to stdout once the server accepts
connections. Ctrl-C or SIGTERM ends it: open requests finish (for at most
SHUTDOWN_S), then the command exits 0, never re-raising the signal as uvicorn
would by itself.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from contextlib import contextmanager

import uvicorn

from labelsd.config import Settings
from labelsd.errors import ServeError
from labelsd.web.app import create_app
from labelsd.web.site import ServeOptions, Site

log = logging.getLogger(__name__)

SHUTDOWN_S = 3  # open connections get this long to finish after Ctrl-C / SIGTERM
BACKLOG = 2048


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_token(settings: Settings, options: ServeOptions) -> tuple[str | None, bool]:
    """(the token asked for or None, whether it was made up now and must be printed).
    A configured token is asked for on any address; loopback needs none; any other
    address gets a fresh one unless --no-auth."""
    if options.no_auth:
        return None, False
    if settings.serve_token:
        return settings.serve_token, False
    if is_loopback(options.host):
        return None, False
    return secrets.token_urlsafe(24), True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise ServeError(f"cannot serve on {host!r}: {getattr(err, 'strerror', None) or err}; "
                         "give --host an address of this machine (127.0.0.1, 0.0.0.0, ::)") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        what = "is in use; choose another with --port" if err.errno == 98 else (err.strerror or str(err))
        raise ServeError(f"cannot serve on {host}:{port}: the port {what}") from err
    return sock


def address_shown(host: str, sock: socket.socket, token: str | None) -> str:
    """The address to open, as printed: the machine's name for a wildcard address."""
    port = sock.getsockname()[1]
    name = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


class _Server(uvicorn.Server):
    """uvicorn's server, ending quietly on a signal and saying when it is ready."""

    def __init__(self, config: uvicorn.Config, ready_line: str, site: Site):
        super().__init__(config)
        self.ready_line = ready_line
        self.site = site

    async def shutdown(self, sockets=None) -> None:
        # A request waiting for a comparison (/api/duplicates) is answered now, not
        # cancelled with a traceback when the graceful shutdown's time is up.
        self.site.duplicates.cancel()
        await super().shutdown(sockets)

    async def startup(self, sockets=None) -> None:
        # The pages run in a thread pool (each thread with its own sqlite3 connection
        # and page cache): as many threads as the cores can keep busy, not anyio's 40.
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads()
        await super().startup(sockets)
        if self.started:
            print(self.ready_line, flush=True)
            threading.Thread(target=warm_up, name="labels-serve-warm-up", daemon=True).start()

    @contextmanager
    def capture_signals(self):
        # As uvicorn's, but without raising the caught signal again afterwards:
        # a stop asked for is a clean end (exit 0).
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def worker_threads() -> int:
    """Threads serving pages at once: 4 per core the process may use, 8 to 32."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return min(32, max(8, 4 * cores))


def warm_up() -> None:
    """What the first thumbnail would otherwise wait for (Pillow, numpy: ~0.3 s),
    loaded once the server answers, so that start-up does not pay for it."""
    import labelsd.serve.thumbnails  # noqa: F401


def serve(settings: Settings, options: ServeOptions) -> None:
    """Serve the library named by `settings` until Ctrl-C or SIGTERM."""
    token, made_up = choose_token(settings, options)
    sock = bind(options.host, options.port)
    try:
        site = Site(settings, options, token, check_host=token is None and not options.no_auth)
    except BaseException:
        sock.close()
        raise
    try:
        config = uvicorn.Config(create_app(site), lifespan="off", log_config=None,
                                access_log=False, server_header=False,
                                timeout_graceful_shutdown=SHUTDOWN_S, backlog=BACKLOG)
        shown = address_shown(options.host, sock, token if made_up else None)
        extra = ("; the token is asked for once, then kept in a cookie" if made_up
                 else "; read-only" if options.read_only else "")
        server = _Server(config, f"labels serve: {shown}  (Ctrl-C stops it{extra})", site)
        server.run(sockets=[sock])
    finally:
        sock.close()
        site.close()
    sys.stdout.flush()


__all__ = ["address_shown", "bind", "choose_token", "is_loopback", "serve"]
