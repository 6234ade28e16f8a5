"""`labels serve`'s pages and JSON through Starlette's test client, over a real
library in tmp_path: the same answers as the `labels` commands (byte for byte
for /api/search), forms that change the library the way `labels tag` does,
escaping, and --read-only."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from labels_cli.app import app as cli
from weblib import (
    HOSTILE_FILE,
    HOSTILE_TAGS,
    SPORTS_CAR,
    LibraryTemplate,
    build_library,
    predictions,
    record_in,
    web_client,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return LibraryTemplate(tmp_path_factory.mktemp("web-routes"))


def labels_cmd(lib, *args: str) -> str:
    result = runner.invoke(cli, ["--config", str(lib.config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


class Page(HTMLParser):
    """What a test reads of a page: the elements carrying data-sha256, the forms
    (with their fields), the text, and whether any inline script or style exists."""

    def __init__(self, text: str):
        super().__init__()
        self.photos: list[str] = []
        self.forms: list[dict] = []
        self.inline: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("span", "a", "strong", "em", "code", "kbd"):
            self.text.append(" ")  # a block's text is a word of its own
        if "data-sha256" in a:
            self.photos.append(a["data-sha256"])
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": {}})
        if tag == "input" and self.forms and a.get("name") and not a.get("form"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        if tag == "script" and "src" not in a or tag == "style" or "style" in a:
            self.inline.append(tag)
        if any(name.startswith("on") for name in a):
            self.inline.append(f"{tag} handler")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join("".join(self.text).split())


def get_page(client, url: str, status: int = 200) -> Page:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert page.inline == [], f"inline script or style on {url}: {page.inline}"
    return page


# ---- search ------------------------------------------------------------------------------


def test_search_page_shows_a_tile_per_hit_best_first(client, lib):
    page = get_page(client, "/search?q=cat")
    assert page.photos == [lib.sha(p) for p in lib.cats]  # scores fall with the index
    assert "Persian cat 90%" in page.words and "Photos 1–6 for cat" in page.words
    for sha in page.photos:
        assert f"/photo/{sha}?back=%2Fsearch%3Fq%3Dcat" in page.links


def test_search_page_says_what_the_floor_hid_and_links_to_it(client, lib):
    # labels search says on stderr how many hits the configured floor hid; the page says it too
    page = get_page(client, "/search?q=tabby")
    assert page.photos == [] and "6 more photos match with a score below 10%" in page.words
    assert "/search?q=tabby&min_score=0" in page.links
    assert len(get_page(client, "/search?q=tabby&min_score=0").photos) == 6
    assert "score below" not in get_page(client, "/search?q=tabby&min_score=0").words


@pytest.mark.parametrize("query, wanted", [
    ("since=2024-07&q=car", ["car"]), ("until=2023&q=car", []), ("camera=iphone&q=vehicle", ["car"]),
    ("q=dog&tag=vacation", ["dog"]), ("q=cat&tag=vacation", []),
    ("q=cat&min_score=80%25", ["cat0", "cat1", "cat2"]), ("q=cat&min_score=0.8", ["cat0", "cat1", "cat2"]),
    ("q=tabby&exact=1", []),  # 5%: under the default floor (search_min_score), as in labels search
    ("q=tabby&exact=1&min_score=0", ["cat0", "cat1", "cat2", "cat3", "cat4", "cat5"]),
    ("q=domestic+cat&exact=1", []), ("tag=vacation", ["dog"]), ("q=grandma", []),
])
def test_search_parameters_are_the_commands_options(client, lib, query, wanted):
    names = {lib.sha(p): p.stem if p != lib.dog else "dog" for p in [*lib.cats, lib.dog, lib.car]}
    page = get_page(client, f"/search?{query}")
    assert [names[s] for s in page.photos] == wanted


def test_search_pages_through_the_hits(lib, tmp_path, monkeypatch):
    monkeypatch.setattr("labelsd.web.views_search.PER_PAGE", 4)
    monkeypatch.setattr("labelsd.web.params.PER_PAGE", 4)
    with web_client(lib, tmp_path / "thumbs") as client:
        first = get_page(client, "/search?q=cat")
        assert first.photos == [lib.sha(p) for p in lib.cats[:4]]
        assert "/search?q=cat&page=2" in first.links
        second = get_page(client, "/search?q=cat&page=2")
        assert second.photos == [lib.sha(p) for p in lib.cats[4:]]
        assert not any("page=3" in link for link in second.links)
        assert "Photos 5–6 for cat" in second.words


def test_a_word_that_matches_nothing_suggests_class_names(client):
    page = get_page(client, "/search?q=dgo")
    assert "No class and no tag is called dgo" in page.words
    assert "/search?q=dog" in page.links


@pytest.mark.parametrize("query, message", [
    ("q=cat&min_score=2", "min_score: 2 is more than 1"), ("q=cat&since=yesterday", "since:"),
    ("q=cat&page=0", "page must be"), ("q=" + "x" * 201, "longer than 200"),
])
def test_parameters_that_make_no_sense_are_a_message_not_an_error(client, query, message):
    page = get_page(client, f"/search?{query}", status=400)
    assert message in page.words


def test_the_home_page_counts_the_library_and_focuses_the_search_box(client):
    response = client.get("/")
    assert 'autofocus' in response.text.split('id="q"')[1].split(">")[0]
    assert "8 labelled, 1 failed." in Page(response.text).words


# ---- the JSON API -------------------------------------------------------------------------


@pytest.mark.parametrize("args, params", [
    (["cat"], "q=cat"), (["animal", "--min-score", "0.3"], "q=animal&min_score=0.3"),
    (["dog", "--tag", "vacation"], "q=dog&tag=vacation"), (["nothing-here"], "q=nothing-here"),
    (["cat", "--limit", "2"], "q=cat&limit=2"), (["tabby", "--exact"], "q=tabby&exact=1"),
    (["car", "--since", "2024", "--camera", "iPhone"], "q=car&since=2024&camera=iPhone"),
])
def test_api_search_is_the_bytes_labels_search_json_prints(client, lib, args, params):
    printed = runner.invoke(cli, ["--config", str(lib.config), "search", *args, "--json"])
    assert printed.exit_code == 0
    response = client.get(f"/api/search?{params}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.content == printed.stdout_bytes


def test_api_search_on_both_databases(store, db_url, tmp_path):
    lib = build_library(store, db_url, tmp_path / "lib")
    printed = runner.invoke(cli, ["--config", str(lib.config), "search", "cat", "--json"])
    with web_client(lib, tmp_path / "thumbs") as client:
        assert client.get("/api/search?q=cat").content == printed.stdout_bytes
        sha = lib.sha(lib.dog)
        assert json.loads(client.get(f"/api/photo/{sha}").content)["tags"] == [
            "<script>alert(2)</script>", 'a"b', "vacation"]
        # a change through a form, as on SQLite
        fields = next(f for f in get_page(client, f"/photo/{sha}").forms
                      if f["action"] == f"/photo/{sha}/tags")["fields"]
        assert client.post(f"/photo/{sha}/tags", data={**fields, "tag": "Beach"}).status_code == 200
        assert [r["path"] for r in json.loads(labels_cmd(lib, "search", "beach", "--json"))] == [
            str(lib.dog)]
    client.site.close()


def test_api_photo_is_labels_show_json_of_its_first_path(client, lib):
    response = client.get(f"/api/photo/{lib.sha(lib.car)}")
    assert response.content == labels_cmd(lib, "show", str(lib.car), "--json").encode()
    assert json.loads(response.content)["camera"] == "Apple iPhone 13"
    assert client.get("/api/photo/" + "0" * 64).status_code == 404
    assert client.get("/api/search?q=cat&min_score=x").json()["error"].startswith("min_score")


# ---- one photo ----------------------------------------------------------------------------


def test_photo_page_shows_labels_tags_exif_and_every_path(client, lib, tmp_path):
    copy = lib.photos / "copy of car.jpg"
    copy.write_bytes(lib.car.read_bytes())
    record_in(lib, {copy: predictions((SPORTS_CAR, 0.8))})
    sha = lib.sha(lib.car)
    page = get_page(client, f"/photo/{sha}")
    assert page.photos == [sha]
    words = page.words
    for fact in ("sports car 80%", "Taken 2024-07-14 15:30:00", "Camera Apple iPhone 13",
                 "Place 48.85667, 2.35083", "Size 400 × 300", "Model inception_v3",
                 str(lib.car), str(copy), "2 files (the same content)"):
        assert fact in words, fact
    assert "/search?q=sports%20car&exact=1" in page.links


def test_a_failed_photo_says_why(client, lib):
    page = get_page(client, f"/photo/{lib.sha(lib.broken)}")
    assert "Not an image" in page.words and "failed" in page.words


def test_unknown_photos_are_404(client):
    for url in ("/photo/" + "0" * 64, "/photo/not-a-hash", "/photo/%2e%2e", "/photo/%2Fetc%2Fpasswd", "/nowhere"):
        page = get_page(client, url, status=404)
        assert "Not found" in page.words


def test_adding_and_removing_a_tag_through_the_forms(client, lib):
    sha = lib.sha(lib.cats[1])
    page = get_page(client, f"/photo/{sha}?back=/search%3Fq%3Dcat")
    add = next(f for f in page.forms if f["action"].startswith(f"/photo/{sha}/tags?"))
    assert add["method"] == "post" and len(add["fields"]["csrf"]) == 43
    response = client.post(add["action"], data={**add["fields"], "tag": "Garden"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/photo/{sha}?back=%2Fsearch%3Fq%3Dcat#tags"
    # `labels search` agrees: the tag's word finds the photo, and --tag keeps it
    found = json.loads(labels_cmd(lib, "search", "garden", "--json"))
    assert [r["path"] for r in found] == [str(lib.cats[1])]
    assert "Garden" in get_page(client, f"/photo/{sha}").words
    remove = next(f for f in get_page(client, f"/photo/{sha}").forms
                  if f["action"] == f"/photo/{sha}/tags/remove")
    assert remove["fields"]["tag"] == "Garden"
    assert client.post(remove["action"], data=remove["fields"]).status_code == 200
    assert json.loads(labels_cmd(lib, "search", "garden", "--json")) == []


def test_an_empty_tag_is_refused_with_the_commands_message(client, lib):
    sha = lib.sha(lib.cats[0])
    add = next(f for f in get_page(client, f"/photo/{sha}").forms if "/tags" in f["action"])
    page = Page(client.post(add["action"], data={**add["fields"], "tag": "   "}).text)
    assert "a tag cannot be empty" in page.words


# ---- labels, tags, status -----------------------------------------------------------------


def test_labels_page_groups_labels_the_way_search_does(client):
    page = get_page(client, "/labels")
    words = page.words
    assert "cat 6 Persian cat 6" in words and "dog 1 golden retriever 1" in words
    assert "/search?q=cat" in page.links and "/search?q=Persian%20cat&exact=1" in page.links


def test_tags_page_lists_tags_as_labels_tags_does(client, lib):
    page = get_page(client, "/tags")
    counts = json.loads(labels_cmd(lib, "tags", "--json"))
    for tag in counts:
        assert tag["tag"] in page.words
    assert "/search?q=vacation&tag=vacation" in page.links


def test_status_page_lists_failures_and_retry_queues_them(client, lib):
    page = get_page(client, "/status")
    assert "not running" in page.words and "not an image" in page.words
    assert lib.sha(lib.broken) in page.photos
    retry = next(f for f in page.forms if f["action"] == "/status/retry")
    response = client.post("/status/retry", data=retry["fields"], follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/status?retried=1"
    assert "Queued 1 failed image again" in get_page(client, "/status?retried=1").words
    assert json.loads(labels_cmd(lib, "list", "--status", "failed", "--json")) == []


# ---- safety -------------------------------------------------------------------------------


def test_every_name_tag_and_label_is_escaped(client, lib):
    sha = lib.sha(lib.dog)
    for url in (f"/photo/{sha}", "/search?q=dog", "/tags", "/search?q=vacation&tag=" + HOSTILE_TAGS[0]):
        text = client.get(url).text
        assert "<script>alert" not in text and "<img src=x" not in text and 'a"b<' not in text
        page = Page(text)
        assert page.inline == []
    words = get_page(client, f"/photo/{sha}").words
    assert HOSTILE_FILE in words and HOSTILE_TAGS[0] in words and HOSTILE_TAGS[1] in words


def test_every_response_carries_the_security_headers(client, lib):
    for url in ("/", "/search?q=cat", f"/photo/{lib.sha(lib.dog)}", "/api/search?q=cat", "/nowhere",
                f"/thumb/{lib.sha(lib.dog)}", "/static/app.js"):
        headers = client.get(url).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


def test_a_post_without_the_form_token_is_refused(client, lib):
    sha = lib.sha(lib.cats[0])
    get_page(client, "/")  # the browser has its cookie
    for data in ({"tag": "x"}, {"tag": "x", "csrf": "A" * 43}):
        response = client.post(f"/photo/{sha}/tags", data=data)
        assert response.status_code == 403 and "expired" in response.text
    page = get_page(client, f"/photo/{sha}")
    fields = next(f for f in page.forms if "/tags" in f["action"])["fields"]
    response = client.post(f"/photo/{sha}/tags", data={**fields, "tag": "x"},
                           headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and "another site" in response.text
    client.cookies.clear()  # a form from another browser (or site): its cookie is not ours
    assert client.post(f"/photo/{sha}/tags", data={**fields, "tag": "x"}).status_code == 403
    assert json.loads(labels_cmd(lib, "search", "x", "--json")) == []


def test_read_only_hides_and_refuses_every_change(lib, tmp_path):
    with web_client(lib, tmp_path / "thumbs", read_only=True) as client:
        sha = lib.sha(lib.dog)
        for url in (f"/photo/{sha}", "/status"):
            page = get_page(client, url)
            assert [f["method"] for f in page.forms] == ["get"], url  # the search box alone
        assert "read-only" in get_page(client, "/").words
        csrf = client.cookies.get("labels_csrf")
        for url in (f"/photo/{sha}/tags", f"/photo/{sha}/tags/remove", "/status/retry"):
            response = client.post(url, data={"csrf": csrf, "tag": "vacation"})
            assert response.status_code == 403 and "read-only" in response.text
    client.site.close()
    assert "vacation" in labels_cmd(lib, "tags")


def test_static_assets_are_versioned_and_unknown_ones_404(client):
    page = client.get("/").text
    css = re.search(r'href="(/static/style\.css\?v=\w+)"', page).group(1)
    response = client.get(css)
    assert response.status_code == 200 and "immutable" in response.headers["cache-control"]
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404


def test_label_groups_are_what_their_word_finds():
    from labelsd.model.taxonomy import classes, select_classes
    from labelsd.web.labelgroups import GROUPS, OTHER, group_labels

    assert all(select_classes(word) for word in GROUPS)
    every = [(cls.label, 1) for cls in classes()]
    groups = group_labels(every)
    assert sum(g.count for g in groups) == 1000 and groups[-1].word == OTHER
    assert len(next(g for g in groups if g.word == OTHER).labels) < 10  # nearly all grouped
    index = {cls.label: cls.index for cls in classes()}
    for group in groups[:-1]:
        found = select_classes(group.word)
        assert all(index[label] in found for label, _ in group.labels), group.word
    by_word = {g.word: {label for label, _ in g.labels} for g in groups}
    assert {"tabby", "Persian cat", "cougar"} <= by_word["cat"]  # the most specific word wins
    assert "golden retriever" in by_word["dog"] and "tabby" not in by_word["mammal"]


def test_a_library_that_does_not_answer_is_one_line_503(client, monkeypatch):
    from labelsd.errors import StoreUnavailable

    def locked(*args, **kwargs):
        raise StoreUnavailable("the database /x/labels.db stayed locked by another process; try again")

    monkeypatch.setattr("labelsd.web.views_search.query.find", locked)
    response = client.get("/search?q=cat")
    assert response.status_code == 503
    assert response.text == ("labels serve: the database /x/labels.db stayed locked by another "
                             "process; try again\n")
    assert "content-security-policy" in response.headers


@pytest.mark.parametrize("q", ["%00", "%FF%FE", "%E2%80%AE", "' OR 1=1 --", "%25%5F", "*", "\\"])
def test_odd_queries_are_only_words(client, q):
    assert client.get(f"/search?q={q}").status_code == 200
    assert client.get(f"/api/search?q={q}").status_code == 200


def test_a_form_too_large_is_refused(client, lib):
    get_page(client, "/")
    response = client.post(f"/photo/{lib.sha(lib.car)}/tags",
                           data={"csrf": client.cookies.get("labels_csrf"), "tag": "x" * 70_000})
    assert response.status_code == 413
