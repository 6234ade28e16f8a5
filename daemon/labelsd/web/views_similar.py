"""Photos that look alike: "more like this" (`/photo/<sha256>/similar`: a page of its
own, and what static/app.js loads into the photo page's section of that name, so
that the photo page never waits for a scan of every vector) and
`/api/similar/<sha256>` (what `labels similar PATH --json` prints, byte for byte, for
the content's first present path, the one /api/photo shows). Both call
`labelsd.serve.similar`: the page `similar_to_content` (the content's own paths left
out: the photo page lists them already), the API `similar`, as the command does.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from labelsd.errors import NotEmbeddedYet, NotTracked
from labelsd.serve import similar as similarity
from labelsd.serve.photos import content_records
from labelsd.store.recordjson import encode
from labelsd.web.params import TRUE, whole_param
from labelsd.web.site import json_error, json_list
from labelsd.web.views_photo import photo_context, records_or_404
from labelsd.web.views_search import tile

MORE_LIKE_THIS = 12  # tiles in the photo page's section
MAX_SHOWN = 200  # the most a page shows (`limit`)
NOT_EMBEDDED = ("Not embedded yet: the service embeds labelled photos when it is idle "
                "(labels status shows how far it is).")
RETRY_AFTER_S = 60


def _no_vector_ever(context: dict) -> bool:
    """A content that failed to decode (not an image) never gets a vector."""
    return context["failed"] is not None and not context["showable"]


def similar_page(request: Request) -> Response:
    """The photos most like one content, best first, each a tile with its similarity;
    a calm note where the content has no vector yet."""
    site = request.app.state.site
    sha = request.path_params["sha256"]
    records = records_or_404(request)
    if isinstance(records, Response):
        return records
    errors: list[str] = []
    limit = whole_param(request.query_params, "limit", MORE_LIKE_THIS, MAX_SHOWN, errors)
    context = photo_context(records)
    page = {"sha256": sha, "main": context["main"], "tiles": [], "note": None, "errors": errors,
            "limit": limit, "more": None, "back": f"/photo/{sha}"}
    if errors:
        return site.render(request, "similar.html", code=400, **page)
    if _no_vector_ever(context):
        page["note"] = "A file that is not an image has no photos like it."
        return site.render(request, "similar.html", **page)
    try:
        result = similarity.similar_to_content(site.reader(), sha, limit=limit)
    except NotEmbeddedYet:
        page["note"] = NOT_EMBEDDED
        return site.render(request, "similar.html", **page)
    page["tiles"] = [tile(rec) for rec in result.found]
    if len(result.found) == limit and limit < MAX_SHOWN:
        page["more"] = f"/photo/{sha}/similar?limit={min(MAX_SHOWN, max(60, limit * 4))}"
    return site.render(request, "similar.html", **page)


def api_similar(request: Request) -> Response:
    """`labels similar PATH --json [--limit N] [--include-missing]` for the content's
    first present path: the same bytes. Its exact copies elsewhere score 1.0. 404 for a
    hash the library does not hold; 409 for a file that failed to decode (`labels
    similar` exits 1); 503 with Retry-After while it has no vector yet (the command
    exits 75, EX_TEMPFAIL: try again later); 400 for a parameter that makes no sense."""
    site = request.app.state.site
    records = content_records(site.reader(), request.path_params["sha256"])
    if not records:
        return json_error("no photo with that content hash", 404)
    errors: list[str] = []
    limit = whole_param(request.query_params, "limit", similarity.DEFAULT_LIMIT, 10**9, errors)
    if errors:
        return json_error("; ".join(errors), 400)
    context = photo_context(records)
    if _no_vector_ever(context):
        return json_error(f"{context['main']['path']} failed to decode: it has no embedding", 409)
    include_missing = (request.query_params.get("include_missing") or "").lower() in TRUE
    try:
        result = similarity.similar(site.reader(), context["main"]["path"], limit=limit,
                                    include_missing=include_missing)
    except NotEmbeddedYet as err:
        return json_error(str(err), 503, {"retry-after": str(RETRY_AFTER_S)})
    except NotTracked as err:  # its last path went away meanwhile
        return json_error(str(err), 404)
    return json_list(map(encode, result.found))  # as render_records writes `--json`


__all__ = ["MORE_LIKE_THIS", "api_similar", "similar_page"]
