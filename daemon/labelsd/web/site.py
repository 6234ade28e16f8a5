"""What every page of `labels serve` needs, made once at start: the settings, a
read-only view of the library for each server thread, the store for changes
(opened on the first change), the watched folders photos may be read from, the
thumbnail cache, the duplicates comparisons (web/dupjobs.py) and the templates.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from labelsd import __version__
from labelsd.config import Settings, default_db
from labelsd.paths import canonical_root
from labelsd.serve import query
from labelsd.serve.reader import Reader, open_reader
from labelsd.store.recordjson import write_list
from labelsd.web.dupjobs import DuplicateJobs
from labelsd.web.thumbs import ThumbCache, user_thumb_folder

log = logging.getLogger(__name__)

ROOTS_FRESH_S = 10.0  # how long the watched folders read from the nodes table are reused


@dataclass(frozen=True)
class ServeOptions:
    """`labels serve`'s own flags."""

    host: str = "127.0.0.1"
    port: int = 8470
    read_only: bool = False
    no_auth: bool = False


class Readers:
    """A read-only view of the library per server thread: a sqlite3 connection
    serves one transaction at a time, and the server's threads read at once. A
    PostgreSQL library is one Store, whose pool serves every thread."""

    def __init__(self, db: str):
        self.db = db
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Reader] = []
        self._shared: Reader | None = None
        first = open_reader(db, default_db())  # a missing or unreadable library: one line, at start
        if "://" in db:
            self._shared = first
        else:
            self._local.reader = first
        self._opened.append(first)

    def get(self) -> Reader:
        if self._shared is not None:
            return self._shared
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = open_reader(self.db, default_db())
            with self._lock:
                self._opened.append(reader)
        return reader

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for reader in opened:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing at exit: nothing left to do with it
                log.debug("closing a reader failed", exc_info=True)


class Site:
    """The running site: settings, readers, the store for changes, templates."""

    def __init__(self, settings: Settings, options: ServeOptions, token: str | None, *,
                 check_host: bool = False, thumb_folder: Path | None = None):
        self.settings = settings
        self.options = options
        self.read_only = options.read_only
        self.token = token  # None: no token asked for
        self.check_host = check_host  # answer only loopback host names (no token in force)
        self.readers = Readers(settings.db)
        self.thumbs = ThumbCache(user_thumb_folder() if thumb_folder is None else thumb_folder)
        self.duplicates = DuplicateJobs(self.reader)  # its thread starts with the first comparison
        self.templates = _templates()
        self._store = None
        self._store_lock = threading.Lock()
        self._roots: tuple[float, list[str]] = (0.0, [])

    def reader(self) -> Reader:
        return self.readers.get()

    def store(self):
        """The store the `labels` commands change the library through (SQLAlchemy,
        imported on the first change, so that a server that only shows pays nothing)."""
        with self._store_lock:
            if self._store is None:
                from labelsd.store.engine import open_store

                # never create one: a library deleted under the server is an error, not a new one
                self._store = open_store(self.settings.db, create=False, default_db=default_db())
            return self._store

    def roots(self) -> list[str]:
        """The folders photos may be read from: the configured `watch` folders and
        those of every service that registered with this library (running or not).
        Read again every ROOTS_FRESH_S."""
        read_at, roots = self._roots
        if time.monotonic() - read_at < ROOTS_FRESH_S:
            return roots
        found = [canonical_root(r) for r in self.settings.watch]
        for node in query.list_nodes(self.reader()):
            found += [canonical_root(r) for r in node["watching"]]
        roots = list(dict.fromkeys(found))
        self._roots = (time.monotonic(), roots)
        return roots

    def render(self, request: Request, name: str, code: int = 200, **context) -> HTMLResponse:
        """The template `name` as a page; every page knows the request, the form
        token, whether changes are allowed and the version."""
        state = request.scope.get("state", {})
        page = self.templates.get_template(name).render(
            request=request, csrf=state.get("csrf", ""), read_only=self.read_only,
            version=__version__, **context)
        return HTMLResponse(page, status_code=code)

    def close(self) -> None:
        self.duplicates.stop()
        self.readers.close()
        if self._store is not None:
            self._store.close()


def json_error(message: str, status: int, headers: dict | None = None) -> Response:
    """What a JSON address answers when it cannot: {"error": message} on one line."""
    return Response(json.dumps({"error": message}, ensure_ascii=False) + "\n", status_code=status,
                    media_type="application/json", headers=headers)


def json_list(texts) -> Response:
    """Records already encoded as JSON text, as the `labels` command's `--json` writes
    them (recordjson.write_list): the same bytes."""
    out = io.StringIO()
    write_list(texts, out)
    return Response(out.getvalue().encode("utf-8"), media_type="application/json")


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("labelsd.web", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["pct"] = percent
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["qv"] = lambda text: quote(text, safe="")  # a query value, "/" and "?" too
    env.filters["basename"] = lambda path: (path or "").rsplit("/", 1)[-1] or path
    env.filters["size"] = file_size
    env.filters["sim"] = lambda score: "?" if score is None else f"{score:.2f}"
    return env


def file_size(n: int | None) -> str:
    """Bytes as people read them: 912 bytes, 48 KB, 3.4 MB (powers of 1,000, as file
    managers show them)."""
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{n} bytes"


def percent(score: float | None) -> str:
    """A score as people read it: 83%, 0.4%, <0.1%."""
    if score is None:
        return ""
    if score >= 0.095:
        return f"{score:.0%}"
    return f"{score:.1%}" if score >= 0.001 else "<0.1%"


__all__ = ["Readers", "ServeOptions", "Site", "file_size", "json_error", "json_list", "percent"]
