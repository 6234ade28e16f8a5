"""One photo: its page (`/photo/<sha256>`), its record (`/api/photo/<sha256>`),
adding or removing a tag (POST `/photo/<sha256>/tags`, `/photo/<sha256>/tags/remove`)
through `labelsd.store.tags`, as `labels tag` and `labels untag` do, and judging a
label (POST `/photo/<sha256>/labels/<class_index>/reject`, `unreject`, `confirm`,
`unconfirm`) through `labelsd.store.judgements` with source "web", as `labels
reject` and the others do; the sidecars of the content's files follow.

A photo is its content: the page lists every path that holds it, and a tag or a
judgement given to it is given to the content, as the commands give it. A change
the store refuses (rejecting twice from a second tab, a label a relabelling took
away meanwhile) is the page again with the store's one line, and nothing changed.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from labelsd.errors import JudgementRefused, NotTracked
from labelsd.serve.photos import content_records, is_content_hash
from labelsd.web.site import json_error

log = logging.getLogger(__name__)

PHOTO_SIZE = 1024  # the picture on the photo page (2048 on a high-density screen)


BACK_TEXTS = (("/search?", "Back to the results"), ("/duplicates", "Back to the duplicates"),
              ("/photo/", "Back to the photo"), ("/", "Back to the results"))


def _back(request: Request) -> str | None:
    """Where "back" leads: a search, the duplicates or another photo (whose "more like
    this" led here) of this site, nothing else."""
    back = request.query_params.get("back", "")
    if "\\" in back:
        return None
    if back == "/" or back.startswith("/search?") or back == "/duplicates" or back.startswith("/duplicates?"):
        return back
    return back if back.startswith("/photo/") and is_content_hash(back[len("/photo/"):]) else None


def back_text(back: str) -> str:
    return next(text for prefix, text in BACK_TEXTS if back.startswith(prefix))


def photo_context(records: list[dict]) -> dict:
    """What the photo page shows of the records of one content."""
    main = next((r for r in records if r["status"] != "missing"), records[0])
    labelled = next((r for r in records if r["labels"]), main)
    failed = next((r for r in records if r["status"] == "failed"), None)
    return {
        "sha256": main["sha256"], "main": main, "records": records,
        "labels": labelled["labels"], "model": labelled["model"] or main["model"],
        "rejected": labelled["rejected"], "tags": main["tags"], "failed": failed,
        "showable": any(r["status"] in ("done", "pending") for r in records),
    }


def _page(request: Request, records: list[dict], *, code: int = 200, error: str | None = None):
    site = request.app.state.site
    back = _back(request)
    return site.render(request, "photo.html", code=code, back=back, error=error,
                       back_text=back_text(back) if back else "", photo_size=PHOTO_SIZE,
                       **photo_context(records))


def records_or_404(request: Request) -> list[dict] | Response:
    """The records of the content the address names, or the page saying there is none."""
    site = request.app.state.site
    records = content_records(site.reader(), request.path_params["sha256"])
    if not records:
        return site.render(request, "missing.html", code=404,
                           what="This library holds no photo with that content hash.")
    return records


def photo_page(request: Request) -> Response:
    found = records_or_404(request)
    return found if isinstance(found, Response) else _page(request, found)


def api_photo(request: Request) -> Response:
    """One record, as `labels show --json` prints that of the content's first present path."""
    site = request.app.state.site
    records = content_records(site.reader(), request.path_params["sha256"])
    if not records:
        return json_error("no photo with that content hash", 404)
    main = photo_context(records)["main"]
    return Response((json.dumps(main, ensure_ascii=False, indent=2) + "\n").encode("utf-8"),
                    media_type="application/json")


def _change_tags(request: Request, adding: bool) -> Response:
    from labelsd.store import tags as tagging

    site = request.app.state.site
    found = records_or_404(request)
    if isinstance(found, Response):
        return found
    tag = request.state.form.get("tag", "")
    path = found[0]["path"]  # a tag belongs to the content: any of its paths names it
    try:
        (tagging.add_tags if adding else tagging.remove_tags)(site.store(), path, [tag])
    except tagging.InvalidTag as err:
        return _page(request, found, code=400, error=str(err))
    except NotTracked as err:  # its last path went away meanwhile
        return _page(request, found, code=409, error=str(err))
    _refresh_sidecars(request, found, [tag] if adding else ())
    return _done(request, found, "tags")


def _refresh_sidecars(request: Request, records: list[dict], lift) -> None:
    """With xmp = "sidecar", rewrite the sidecar of every file holding the content
    (as `labels tag` and `labels reject` rewrite theirs); one that cannot be written
    is a warning in the log: the change itself is done."""
    site = request.app.state.site
    if site.settings.xmp != "sidecar":
        return
    from labelsd.xmp.writer import refresh_after_tagging

    paths = [r["path"] for r in records if r["status"] != "missing"]
    for message in refresh_after_tagging(site.store(), site.settings.xmp_min_score, paths, lift):
        log.warning("%s", message)


def _done(request: Request, records: list[dict], section: str) -> Response:
    """After a change: the photo's page again (303, so a reload changes nothing), at
    the section changed (on a phone it lies below the picture; Tab goes on from there)."""
    back = _back(request)
    target = (f"/photo/{records[0]['sha256']}" + (f"?back={quote(back, safe='')}" if back else "")
              + f"#{section}")
    return RedirectResponse(target, status_code=303)


def add_tag(request: Request) -> Response:
    return _change_tags(request, adding=True)


def remove_tag(request: Request) -> Response:
    return _change_tags(request, adding=False)


def _judge(request: Request, action: str) -> Response:
    """POST /photo/<sha256>/labels/<class_index>/<action>: reject, unreject, confirm
    or unconfirm one label of the content, as `labels reject -l LABEL` does."""
    from labelsd.model.taxonomy import class_by_index
    from labelsd.store import judgements

    site = request.app.state.site
    index = request.path_params["class_index"]
    found = records_or_404(request)
    if isinstance(found, Response):
        return found
    try:
        label = class_by_index(index).label
    except IndexError:  # the route's digits name no class (1000, 10**30)
        return site.render(request, "missing.html", code=404, what="There is no such label.")
    sha = found[0]["sha256"]
    name = photo_context(found)["main"]["path"].rsplit("/", 1)[-1]  # the page's own heading
    extra = {"source": "web"} if action in ("reject", "confirm") else {}
    try:
        getattr(judgements, action)(site.store(), [sha], index, names={sha: name}, **extra)
    except (JudgementRefused, NotTracked) as err:  # one line; nothing was changed
        return _page(request, found, code=409, error=str(err))
    # a label taken back (unrejected) or confirmed leaves the sidecars' suppressed list
    _refresh_sidecars(request, found, [label] if action in ("unreject", "confirm") else ())
    return _done(request, found, "labels")


def reject_label(request: Request) -> Response:
    return _judge(request, "reject")


def unreject_label(request: Request) -> Response:
    return _judge(request, "unreject")


def confirm_label(request: Request) -> Response:
    return _judge(request, "confirm")


def unconfirm_label(request: Request) -> Response:
    return _judge(request, "unconfirm")


__all__ = ["PHOTO_SIZE", "add_tag", "api_photo", "confirm_label", "photo_context", "photo_page",
           "records_or_404", "reject_label", "remove_tag", "unconfirm_label", "unreject_label"]
