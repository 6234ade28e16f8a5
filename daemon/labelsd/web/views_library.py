"""The library's summaries: `/labels` (as `labels stats` counts them, grouped the
way search understands them), `/tags` (`labels tags`), `/status` (`labels status`
and the failed images, as `labels list --status failed` lists them) and its
retry button (POST `/status/retry`: `labels retry`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from labelsd.serve import query
from labelsd.serve.photos import failed_records
from labelsd.serve.stats import label_counts
from labelsd.web.labelgroups import OTHER, group_labels

FAILURES_SHOWN = 200


def labels_page(request: Request) -> Response:
    site = request.app.state.site
    groups = group_labels(label_counts(site.reader()))
    return site.render(request, "labels.html", groups=groups, other=OTHER,
                       total=sum(g.count for g in groups))


def tags_page(request: Request) -> Response:
    site = request.app.state.site
    return site.render(request, "tags.html", tags=query.tag_counts(site.reader()))


def status_page(request: Request) -> Response:
    site = request.app.state.site
    reader = site.reader()
    status = query.service_status(reader)
    failures = failed_records(reader, FAILURES_SHOWN) if status["failed"] else []
    retried = request.query_params.get("retried", "")
    return site.render(request, "status.html", status=status, failures=failures,
                       shown_max=FAILURES_SHOWN,
                       retried=int(retried) if retried.isdigit() else None)


def retry(request: Request) -> Response:
    from labelsd.store import workqueue

    count = workqueue.retry_failed(request.app.state.site.store())
    return RedirectResponse(f"/status?retried={count}", status_code=303)


__all__ = ["labels_page", "retry", "status_page", "tags_page"]
