"""The one ASGI application of `labels serve`: its routes, its middleware
(guard.py) and the shipped assets.

    /  /search?q=WORD&since=&until=&camera=&tag=&min_score=&exact=&page=   search
    /photo/<sha256>                          one photo (POST .../tags, .../tags/remove,
                                             .../labels/<class_index>/reject|unreject|confirm|unconfirm)
    /photo/<sha256>/similar?limit=N          photos like it (the photo page loads it into its own)
    /duplicates?threshold=T&include_missing=&page=   near-duplicates and exact copies
    /labels  /tags  /status                  summaries (POST /status/retry)
    /api/search?q=...  /api/photo/<sha256>   JSON, as `labels search --json` / `show --json`
    /api/similar/<sha256>  /api/duplicates   JSON, as `labels similar --json` / `duplicates --json`
    /thumb/<sha256>?size=N                   a thumbnail (N one of thumbs.SIZES)
    /static/<name>                           the style sheet, the script, the icon
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from labelsd.errors import LabelsError
from labelsd.web.guard import Guard
from labelsd.web.site import Site
from labelsd.web.thumbs import thumb_view
from labelsd.web.views_duplicates import api_duplicates, duplicates_page
from labelsd.web.views_library import labels_page, retry, status_page, tags_page
from labelsd.web.views_photo import (
    add_tag,
    api_photo,
    confirm_label,
    photo_page,
    reject_label,
    remove_tag,
    unconfirm_label,
    unreject_label,
)
from labelsd.web.views_search import api_search, search_page
from labelsd.web.views_similar import api_similar, similar_page

log = logging.getLogger(__name__)

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}


class Assets:
    """The files of static/, read once: served from memory, named in pages with a
    version (their digest), so a browser keeps each until it changes."""

    def __init__(self):
        folder = resources.files("labelsd.web").joinpath("static")
        self.files: dict[str, tuple[bytes, str]] = {}
        for entry in folder.iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in STATIC_TYPES:
                self.files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name][0])
        self.version = digest.hexdigest()[:12]

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.version}"

    def view(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found\n", status_code=404)
        data, media_type = found
        cache = ("public, max-age=31536000, immutable"
                 if request.query_params.get("v") == self.version else "no-cache")
        return Response(data, media_type=media_type,
                        headers={"cache-control": cache, "etag": f'"{self.version}"'})


def create_app(site: Site) -> Starlette:
    """The application over `site` (the settings, the library, the templates)."""
    assets = Assets()
    site.templates.globals["static"] = assets.url
    routes = [
        Route("/", search_page),
        Route("/search", search_page),
        Route("/photo/{sha256}", photo_page),
        Route("/photo/{sha256}/similar", similar_page),
        Route("/duplicates", duplicates_page),
        Route("/photo/{sha256}/tags", add_tag, methods=["POST"]),
        Route("/photo/{sha256}/tags/remove", remove_tag, methods=["POST"]),
        Route("/photo/{sha256}/labels/{class_index:int}/reject", reject_label, methods=["POST"]),
        Route("/photo/{sha256}/labels/{class_index:int}/unreject", unreject_label, methods=["POST"]),
        Route("/photo/{sha256}/labels/{class_index:int}/confirm", confirm_label, methods=["POST"]),
        Route("/photo/{sha256}/labels/{class_index:int}/unconfirm", unconfirm_label, methods=["POST"]),
        Route("/labels", labels_page),
        Route("/tags", tags_page),
        Route("/status", status_page),
        Route("/status/retry", retry, methods=["POST"]),
        Route("/api/search", api_search),
        Route("/api/photo/{sha256}", api_photo),
        Route("/api/similar/{sha256}", api_similar),
        Route("/api/duplicates", api_duplicates),
        Route("/thumb/{sha256}", thumb_view),
        Route("/static/{name}", assets.view),
    ]

    async def not_found(request: Request, exc) -> Response:
        if request.url.path.startswith(("/api/", "/thumb/", "/static/")):
            return PlainTextResponse("not found\n", status_code=404)
        return site.render(request, "missing.html", code=404,
                           what="There is no page at this address.")

    async def unavailable(request: Request, exc: LabelsError) -> Response:
        # The library cannot be read now (locked for longer than the busy timeout,
        # a damaged file): the page says so, as the CLI's one line does.
        log.warning("%s", exc)
        return PlainTextResponse(f"labels serve: {exc}\n", status_code=503)

    app = Starlette(routes=routes, middleware=[Middleware(Guard, site=site)],
                    exception_handlers={404: not_found, LabelsError: unavailable})
    app.state.site = site
    return app


__all__ = ["Assets", "create_app"]
