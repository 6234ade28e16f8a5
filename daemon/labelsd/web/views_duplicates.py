"""Near-duplicates and exact copies: `/duplicates` (the groups, GROUPS_PER_PAGE at a
time, each member a tile with its pixel size, bytes and similarity, exact copies
marked) and `/api/duplicates` (what `labels duplicates --json` prints, byte for
byte). Both call `labelsd.serve.duplicates.find_duplicates` with the command's
options, through the server's comparisons (web/dupjobs.py): comparing every pair
takes about a minute at 100,000 photos, so it runs beside the requests, the page
says how far it is and refreshes itself, and the result is kept for the next pages.
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from labelsd.serve.duplicates import DEFAULT_THRESHOLD, library_state
from labelsd.web.dupjobs import Ask, Busy, Job
from labelsd.web.params import DuplicatesForm, parse_duplicates
from labelsd.web.site import json_error

GROUPS_PER_PAGE = 30
MEMBERS_SHOWN = 24  # of one group (a low threshold can make one group of thousands)
RETRY_AFTER_S = 60


def _ask(site, form: DuplicatesForm) -> Ask:
    from labelsd.model.registry import get_model  # the model's spec: no TensorFlow

    return Ask(form.threshold, form.include_missing, get_model(site.settings.model).family)


def _groups(job: Job, form: DuplicatesForm) -> list[dict]:
    """The page's groups: each with its number, its members shown and how many not."""
    first = (form.page - 1) * GROUPS_PER_PAGE
    found = job.result.groups[first:first + GROUPS_PER_PAGE]
    return [{"n": first + i + 1, "count": g["count"], "exact": g["exact"],
             "members": g["members"][:MEMBERS_SHOWN], "more": max(0, g["count"] - MEMBERS_SHOWN)}
            for i, g in enumerate(found)]


def _waiting(job: Job, form: DuplicatesForm) -> dict:
    """How far a running comparison is, and when the page looks again."""
    running = job.running_s()
    left = running / job.fraction * (1 - job.fraction) if job.fraction >= 0.02 else None
    return {"percent": int(job.fraction * 100), "running_s": running, "left_s": left,
            "started": job.started_at is not None,
            "refresh": {"seconds": 2 if running < 10 else 5, "url": form.link()}}


def duplicates_page(request: Request) -> Response:
    site = request.app.state.site
    form = parse_duplicates(request.query_params, DEFAULT_THRESHOLD)
    context: dict = {"form": form, "default": DEFAULT_THRESHOLD, "error": None, "waiting": None,
                     "result": None, "groups": [], "changed": False, "refresh": None}
    if form.errors:
        return site.render(request, "duplicates.html", code=400, **context)
    state = library_state(site.reader())
    try:
        job = site.duplicates.ask(_ask(site, form), state, fresh=form.again)
    except Busy as err:
        context["error"] = str(err)
        return site.render(request, "duplicates.html", code=503, **context)
    if form.again:  # started: the address without `again`, so that a reload does not ask again
        return RedirectResponse(form.link(again=False), status_code=303)
    if not job.finished or job.abandoned:
        context["waiting"] = _waiting(job, form)
        context["refresh"] = context["waiting"]["refresh"]
        return site.render(request, "duplicates.html", **context)
    if job.error is not None:
        context["error"] = job.error
        return site.render(request, "duplicates.html", code=503, **context)
    total = len(job.result.groups)
    pages = max(1, -(-total // GROUPS_PER_PAGE))
    context.update(
        result=job.result, groups=_groups(job, form), total=total,
        photos=sum(g["count"] for g in job.result.groups), changed=job.state != state,
        again=form.link(again=True, page=1), took_s=job.took_s,
        at=time.strftime("%H:%M", time.localtime(job.finished_at)), back=form.link(),
        previous=form.link(page=form.page - 1) if form.page > 1 else None,
        next=form.link(page=form.page + 1) if form.page < pages else None, pages=pages)
    return site.render(request, "duplicates.html", **context)


def api_duplicates(request: Request) -> Response:
    """`labels duplicates --json [--threshold T] [--include-missing]`: the same bytes,
    for the library as it is now (a kept result of another state is compared again;
    the answer may take a minute at 100,000 photos). 400 for a threshold outside 0..1."""
    site = request.app.state.site
    form = parse_duplicates(request.query_params, DEFAULT_THRESHOLD)
    if form.errors:
        return json_error("; ".join(form.errors), 400)
    try:
        job = site.duplicates.ask(_ask(site, form), library_state(site.reader()), fresh=True)
    except Busy as err:
        return json_error(str(err), 503, {"retry-after": str(RETRY_AFTER_S)})
    site.duplicates.wait(job)
    if job.result is None:  # the library could not be read, or the server stops
        return json_error(job.error or "the server is stopping", 503)
    text = json.dumps(job.result.groups, ensure_ascii=False, indent=2) + "\n"  # as render_json
    return Response(text.encode("utf-8"), media_type="application/json")


__all__ = ["GROUPS_PER_PAGE", "MEMBERS_SHOWN", "api_duplicates", "duplicates_page"]
