"""The search page (`/`, `/search`) and `/api/search`: both call `query.find`,
the function `labels search` calls, with the same options.

A page asks for one record more than it shows, to know whether a next page
exists, so the first page of 18,000 hits reads 61 records, not 18,000.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from labelsd.serve import query
from labelsd.web.params import PER_PAGE, SearchForm, parse_search
from labelsd.web.site import json_error, json_list

EXAMPLES = ("cat", "dog", "bird", "car", "food", "flower", "boat", "building")


def tile(rec: dict, reason: str = "") -> dict:
    """What a tile of the grid shows of a record: its name, its top label and
    score (or its status), which label or tag found it when that is another, and its
    similarity when the grid is of photos like another ("more like this")."""
    labels = rec["labels"]
    top = labels[0] if labels else None
    return {"sha256": rec["sha256"] or "", "path": rec["path"], "status": rec["status"],
            "label": top["label"] if top else None, "score": top["score"] if top else None,
            "reason": reason if top is None or not reason.startswith(top["label"] + " ") else "",
            "tags": rec["tags"], "similarity": rec.get("similarity")}


def search_page(request: Request) -> Response:
    site = request.app.state.site
    form = parse_search(request.query_params)
    context = {"form": form, "tiles": [], "more": None, "start": 0, "searched": False, "hidden": 0,
               "suggestions": [], "nothing": False, "examples": EXAMPLES}
    if form.errors:
        return site.render(request, "search.html", code=400, **context)
    if form.empty:
        context["counts"] = site.reader().counts()
        return site.render(request, "search.html", **context)
    first = (form.page - 1) * PER_PAGE
    result = query.find(site.reader(), form.text, limit=first + PER_PAGE + 1,
                        **form.find_options(site.settings.search_min_score))
    shown = result.found[first:first + PER_PAGE]
    context.update(
        searched=True, start=first,
        tiles=[tile(rec, result.reason(rec)) for rec in shown],
        more=form.link(page=form.page + 1) if len(result.found) > first + PER_PAGE else None,
        nothing=not result.classes and not result.tag_keys, suggestions=result.suggestions,
        # as `labels search` says on stderr: what the configured floor hid, and the way to see it
        hidden=result.hidden if form.min_score is None else 0, floor=result.floor,
        show_hidden=form.link(min_score=0.0, min_score_text="0", page=1))
    return site.render(request, "search.html", **context)


def api_search(request: Request) -> Response:
    """Exactly the bytes `labels search QUERY --json` prints, with the same options
    as parameters (`limit` as --limit)."""
    site = request.app.state.site
    form: SearchForm = parse_search(request.query_params)
    if form.errors:
        return json_error("; ".join(form.errors), 400)
    result = query.find(site.reader(), form.text, limit=form.limit, as_json=True,
                        **form.find_options(site.settings.search_min_score))
    return json_list(result.texts)


__all__ = ["api_search", "search_page", "tile"]
