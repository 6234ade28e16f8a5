"""Judging a photo's labels in `labels serve` (issue 27's reject and confirm, on
the photo page): each label's Reject and Confirm forms, a confirmed label's Undo,
the rejected labels listed apart with an Undo each; every change made through
`labelsd.store.judgements` with source "web", as `labels reject` makes it, and
what `labels search` and `labels show` then say; a refusal is a notice on the
page that changes nothing; CSRF and --read-only hold; sidecars follow."""

from __future__ import annotations

import json

import pytest

from labelsd.store import judgements
from labelsd.store.engine import open_store
from test_web_routes import Page, get_page, labels_cmd
from weblib import (
    GOLDEN,
    HOSTILE_FILE,
    PERSIAN,
    SIAMESE,
    SPORTS_CAR,
    TABBY,
    LibraryTemplate,
    build_library,
    predictions,
    record_in,
    web_client,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return LibraryTemplate(tmp_path_factory.mktemp("web-judge"))


def action(sha: str, class_index: int, what: str) -> str:
    return f"/photo/{sha}/labels/{class_index}/{what}"


def form(page: Page, path: str) -> dict:
    """The one form of `page` posting to `path` (its query string aside)."""
    found = [f for f in page.forms if f["action"].split("?")[0] == path]
    assert len(found) == 1, (path, [f["action"] for f in page.forms])
    assert found[0]["method"] == "post" and len(found[0]["fields"]["csrf"]) == 43
    return found[0]


def actions_on(page: Page, sha: str) -> set[str]:
    """The judging forms of a photo page, as "class_index/what"."""
    prefix = f"/photo/{sha}/labels/"
    return {f["action"].split("?")[0][len(prefix):] for f in page.forms
            if f["action"].startswith(prefix)}


def shown(lib, path) -> dict:
    return json.loads(labels_cmd(lib, "show", str(path), "--json"))


def found_by(lib, *query: str) -> list[str]:
    return [r["path"] for r in json.loads(labels_cmd(lib, "search", *query, "--json"))]


def test_every_label_has_reject_and_confirm_forms(client, lib):
    sha = lib.sha(lib.cats[0])
    page = get_page(client, f"/photo/{sha}")
    assert actions_on(page, sha) == {f"{i}/{what}" for i in (PERSIAN, TABBY, 284)
                                     for what in ("reject", "confirm")}
    assert "You took back" not in page.words
    assert "Persian cat 90%" in page.words  # the score bars stay


def test_reject_through_the_form_then_undo(client, lib):
    sha = lib.sha(lib.cats[0])
    page = get_page(client, f"/photo/{sha}?back=/search%3Fq%3Dcat")
    reject = form(page, action(sha, PERSIAN, "reject"))
    response = client.post(reject["action"], data=reject["fields"], follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/photo/{sha}?back=%2Fsearch%3Fq%3Dcat#labels"
    # `labels search` and `labels show` agree: the label is gone, rejected on the web
    assert str(lib.cats[0]) not in found_by(lib, "Persian cat", "--exact")
    assert str(lib.cats[0]) not in found_by(lib, "cat")  # its other cat labels are under the floor
    record = shown(lib, lib.cats[0])
    assert [p["label"] for p in record["labels"]] == ["tabby", "Siamese cat"]
    assert [(r["label"], r["source"]) for r in record["rejected"]] == [("Persian cat", "web")]
    # the page lists it apart, with its Undo, and offers no Reject or Confirm for it
    page = get_page(client, f"/photo/{sha}")
    assert "You took back: Persian cat" in page.words
    assert actions_on(page, sha) == {f"{i}/{what}" for i in (TABBY, 284) for what in ("reject", "confirm")} | {
        f"{PERSIAN}/unreject"}
    undo = form(page, action(sha, PERSIAN, "unreject"))
    assert client.post(undo["action"], data=undo["fields"]).status_code == 200
    assert str(lib.cats[0]) in found_by(lib, "Persian cat", "--exact")
    assert shown(lib, lib.cats[0])["rejected"] == []
    assert "You took back" not in get_page(client, f"/photo/{sha}").words


def test_confirm_through_the_form_then_undo(client, lib):
    sha = lib.sha(lib.cats[3])
    page = get_page(client, f"/photo/{sha}")
    confirm = form(page, action(sha, TABBY, "confirm"))
    assert client.post(confirm["action"], data=confirm["fields"]).status_code == 200
    labels = {p["label"]: p["confirmed"] for p in shown(lib, lib.cats[3])["labels"]}
    assert labels == {"Persian cat": False, "tabby": True, "Siamese cat": False}
    # no floor hides a confirmed label (tabby's 5% is under search_min_score's 10%)
    assert found_by(lib, "tabby", "--exact") == [str(lib.cats[3])]
    page = get_page(client, f"/photo/{sha}")
    assert "tabby 5.0% Confirmed Undo Reject" in page.words
    assert f"{TABBY}/confirm" not in actions_on(page, sha)
    assert {f"{TABBY}/unconfirm", f"{TABBY}/reject"} <= actions_on(page, sha)
    undo = form(page, action(sha, TABBY, "unconfirm"))
    assert client.post(undo["action"], data=undo["fields"]).status_code == 200
    assert not any(p["confirmed"] for p in shown(lib, lib.cats[3])["labels"])
    assert found_by(lib, "tabby", "--exact") == []


def test_rejecting_a_confirmed_label_replaces_the_confirmation(client, lib):
    sha = lib.sha(lib.dog)
    page = get_page(client, f"/photo/{sha}")
    confirm = form(page, action(sha, GOLDEN, "confirm"))
    client.post(confirm["action"], data=confirm["fields"])
    reject = form(get_page(client, f"/photo/{sha}"), action(sha, GOLDEN, "reject"))
    assert client.post(reject["action"], data=reject["fields"]).status_code == 200
    record = shown(lib, lib.dog)
    assert [p["label"] for p in record["labels"]] == ["beagle"]
    assert [r["label"] for r in record["rejected"]] == ["golden retriever"]
    assert found_by(lib, "dog") == [str(lib.dog)]  # beagle still finds it


def test_every_label_rejected_leaves_the_undo(client, lib):
    sha = lib.sha(lib.car)
    reject = form(get_page(client, f"/photo/{sha}"), action(sha, SPORTS_CAR, "reject"))
    assert client.post(reject["action"], data=reject["fields"]).status_code == 200
    page = get_page(client, f"/photo/{sha}")
    assert "No labels left. You took back: sports car" in page.words
    assert actions_on(page, sha) == {f"{SPORTS_CAR}/unreject"}
    assert found_by(lib, "car") == []


@pytest.mark.parametrize("first, second, message", [
    ("reject", "reject", "cat1.jpg: Persian cat is already rejected; nothing was changed"),
    ("confirm", "confirm", "cat1.jpg: Persian cat is already confirmed; nothing was changed"),
    (None, "unreject", "cat1.jpg: Persian cat was never rejected; nothing was changed"),
    (None, "unconfirm", "cat1.jpg: Persian cat was never confirmed; nothing was changed"),
])
def test_a_refused_change_is_a_notice_and_changes_nothing(client, lib, first, second, message):
    sha = lib.sha(lib.cats[1])
    get_page(client, f"/photo/{sha}")
    csrf = client.cookies.get("labels_csrf")
    if first:  # as a second tab, or a second click, does
        assert client.post(action(sha, PERSIAN, first), data={"csrf": csrf}).status_code == 200
    before = shown(lib, lib.cats[1])
    response = client.post(action(sha, PERSIAN, second), data={"csrf": csrf})
    assert response.status_code == 409
    page = Page(response.text)
    assert page.inline == [] and message in page.words
    assert 'role="alert"' in response.text
    assert shown(lib, lib.cats[1]) == before


def test_the_notice_escapes_the_photos_name(client, lib):
    sha = lib.sha(lib.dog)
    get_page(client, f"/photo/{sha}")
    response = client.post(action(sha, GOLDEN, "unconfirm"), data={"csrf": client.cookies.get("labels_csrf")})
    assert response.status_code == 409 and "<img src=x" not in response.text
    page = Page(response.text)
    assert page.inline == [] and f"{HOSTILE_FILE}: golden retriever was never confirmed" in page.words


def test_a_label_the_photo_lacks_or_no_class_at_all(client, lib):
    sha = lib.sha(lib.cats[2])
    get_page(client, f"/photo/{sha}")
    csrf = client.cookies.get("labels_csrf")
    before = shown(lib, lib.cats[2])
    response = client.post(action(sha, SPORTS_CAR, "reject"), data={"csrf": csrf})
    assert response.status_code == 409
    assert "cat2.jpg does not carry the label sports car (its top 3 lacks it); nothing was changed" in \
        Page(response.text).words
    for url in (action(sha, 1000, "reject"), action(sha, 10**30, "confirm"),
                action(sha, -1, "reject"), action("0" * 64, PERSIAN, "reject"),
                action("not-a-hash", PERSIAN, "reject"), f"/photo/{sha}/labels/x/reject",
                action(sha, PERSIAN, "delete")):
        response = client.post(url, data={"csrf": csrf})
        assert response.status_code in (404, 405), url
        assert "Not found" in Page(response.text).words or response.status_code == 405, url
    assert shown(lib, lib.cats[2]) == before
    assert client.get(action(sha, PERSIAN, "reject")).status_code == 405  # a link cannot judge


def test_a_judgement_without_the_form_token_is_refused(client, lib):
    sha = lib.sha(lib.cats[0])
    get_page(client, f"/photo/{sha}")  # the browser has its cookie
    for data in ({}, {"csrf": "A" * 43}):
        response = client.post(action(sha, PERSIAN, "reject"), data=data)
        assert response.status_code == 403 and "expired" in response.text
    fields = form(get_page(client, f"/photo/{sha}"), action(sha, PERSIAN, "reject"))["fields"]
    response = client.post(action(sha, PERSIAN, "reject"), data=fields,
                           headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and "another site" in response.text
    assert shown(lib, lib.cats[0])["rejected"] == []


def test_read_only_shows_the_judgements_and_refuses_changes(lib, tmp_path):
    store = open_store(lib.db)
    try:
        judgements.confirm(store, [lib.sha(lib.cats[0])], PERSIAN)
        judgements.reject(store, [lib.sha(lib.cats[0])], TABBY)
    finally:
        store.close()
    sha = lib.sha(lib.cats[0])
    with web_client(lib, tmp_path / "thumbs", read_only=True) as client:
        page = get_page(client, f"/photo/{sha}")
        assert [f["method"] for f in page.forms] == ["get"]  # the search box alone
        assert "Persian cat 90% Confirmed" in page.words and "You took back: tabby" in page.words
        assert "Undo" not in page.words and "Reject" not in page.words
        csrf = client.cookies.get("labels_csrf")
        for what, index in (("reject", PERSIAN), ("unconfirm", PERSIAN), ("unreject", TABBY),
                            ("confirm", 284)):
            response = client.post(action(sha, index, what), data={"csrf": csrf})
            assert response.status_code == 403 and "read-only" in response.text
    client.site.close()
    record = shown(lib, lib.cats[0])
    assert record["labels"][0]["confirmed"] and [r["label"] for r in record["rejected"]] == ["tabby"]


def test_sidecars_follow_for_every_copy(lib, tmp_path):
    from test_xmp import read_xmp, words
    copy = lib.photos / "copy of cat0.jpg"
    copy.write_bytes(lib.cats[0].read_bytes())
    record_in(lib, {copy: predictions((PERSIAN, 0.9), (TABBY, 0.05), (SIAMESE, 0.01))})
    lib.config.write_text(lib.config.read_text() + 'xmp = "sidecar"\nxmp_min_score = 0.01\n')
    sha = lib.sha(lib.cats[0])
    with web_client(lib, tmp_path / "thumbs") as client:
        reject = form(get_page(client, f"/photo/{sha}"), action(sha, TABBY, "reject"))
        assert client.post(reject["action"], data=reject["fields"]).status_code == 200
        for path in (lib.cats[0], copy):
            xmp = read_xmp(f"{path}.xmp")
            assert words(xmp, "Xmp.dc.subject") == ["Persian cat", "Siamese cat"], path
            assert words(xmp, "Xmp.labelsd.suppressed") == ["tabby"], path
        undo = form(get_page(client, f"/photo/{sha}"), action(sha, TABBY, "unreject"))
        assert client.post(undo["action"], data=undo["fields"]).status_code == 200
        for path in (lib.cats[0], copy):
            xmp = read_xmp(f"{path}.xmp")
            assert words(xmp, "Xmp.dc.subject") == ["Persian cat", "tabby", "Siamese cat"], path
            assert "Xmp.labelsd.suppressed" not in xmp, path
    client.site.close()


def test_judging_on_both_databases(store, db_url, tmp_path):
    lib = build_library(store, db_url, tmp_path / "lib")
    sha = lib.sha(lib.dog)
    with web_client(lib, tmp_path / "thumbs") as client:
        reject = form(get_page(client, f"/photo/{sha}"), action(sha, GOLDEN, "reject"))
        assert client.post(reject["action"], data=reject["fields"]).status_code == 200
        assert found_by(lib, "golden retriever") == []
        assert [(r["label"], r["source"]) for r in shown(lib, lib.dog)["rejected"]] == [
            ("golden retriever", "web")]
        again = client.post(reject["action"], data=reject["fields"])
        assert again.status_code == 409 and "already rejected" in again.text
    client.site.close()
