"""`labels serve`'s photos that look alike, through Starlette's test client over a real
library with stored vectors (no model: weblib.add_vectors writes them through the
writer's own store_vectors): the photo page's "more like this" (loaded apart, from
/photo/<sha256>/similar), the duplicates page, and /api/similar and /api/duplicates,
the bytes `labels similar --json` and `labels duplicates --json` print."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from labels_cli.app import app as cli
from labelsd.store import contents
from labelsd.store.engine import open_store
from test_web_routes import Page, get_page, labels_cmd, runner
from weblib import (
    BEAGLE,
    GOLDEN,
    HOSTILE_FILE,
    PERSIAN,
    SIAMESE,
    TABBY,
    LibraryTemplate,
    add_vectors,
    build_library,
    predictions,
    record_in,
    web_client,
)

DEADLINE_S = 30


def _copies_and_vectors(lib) -> None:
    """An exact copy of cats[0] (`cat0 copy.jpg`, first by path) and one of the dog,
    with the dog's hostile name, at the top of the folder; then vectors for all but
    the car (not embedded yet)."""
    lib.cat_copy = lib.photos / "cat0 copy.jpg"
    lib.dog_copy = lib.photos / HOSTILE_FILE
    shutil.copyfile(lib.cats[0], lib.cat_copy)
    shutil.copyfile(lib.dog, lib.dog_copy)
    record_in(lib, {lib.cat_copy: predictions((PERSIAN, 0.9), (TABBY, 0.05), (SIAMESE, 0.01)),
                    lib.dog_copy: predictions((GOLDEN, 0.7), (BEAGLE, 0.2))})
    add_vectors(lib, skip=(lib.car,))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return LibraryTemplate(tmp_path_factory.mktemp("web-similar"), then=_copies_and_vectors)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A vector file that cannot go beside the database goes to this test's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def similarities(text: str) -> list[float]:
    return [float(s) for s in re.findall(r'class="score similarity"[^>]*>([-0-9.]+)<', text)]


# ---- more like this ------------------------------------------------------------------------


def test_the_photo_page_loads_more_like_this_apart(client, lib):
    sha = lib.sha(lib.cats[0])
    response = client.get(f"/photo/{sha}")
    page = Page(response.text)
    assert 'id="similar-grid"' in response.text and f'data-load="/photo/{sha}/similar"' in response.text
    assert f"/photo/{sha}/similar" in page.links  # without script, a link to the same
    assert "More like this" in page.words and page.inline == []
    assert page.photos == [sha]  # the photo itself: its similar photos come later
    # a file that is not an image has nothing to compare: no section at all
    assert 'id="similar"' not in client.get(f"/photo/{lib.sha(lib.broken)}").text


def test_more_like_this_shows_the_most_similar_photos_best_first(client, lib):
    sha = lib.sha(lib.cats[0])
    page = get_page(client, f"/photo/{sha}/similar")
    cats = [lib.sha(c) for c in lib.cats]
    # the near copy first, then the other cats, then the rest; the photo and its copy not at all
    assert page.photos[0] == cats[1] and sha not in page.photos
    assert set(page.photos[:len(cats) - 1]) == set(cats[1:])
    assert len(page.photos) == len(cats) - 1 + 2  # the dog (two files of it); the car has no vector
    scores = similarities(client.get(f"/photo/{sha}/similar").text)
    assert len(scores) == len(page.photos) and scores == sorted(scores, reverse=True)
    assert scores[0] > 0.95 and scores[-1] < 0.5
    for other in page.photos:
        assert f"/photo/{other}?back=%2Fphoto%2F{sha}" in page.links
    # the order is that of `labels similar`, which leaves out only the path asked about
    printed = json.loads(labels_cmd(lib, "similar", str(lib.cats[0]), "--json", "--limit", "20"))
    assert [r["sha256"] for r in printed if r["sha256"] != sha] == page.photos
    assert "Photos like cat0 copy.jpg" in page.words and "← Back to the photo" in page.words  # first by path


def test_more_like_this_shows_twelve_and_links_to_more(client, lib, monkeypatch):
    from labelsd.web import views_similar

    sha = lib.sha(lib.cats[2])
    monkeypatch.setattr(views_similar, "MORE_LIKE_THIS", 3)
    page = get_page(client, f"/photo/{sha}/similar")
    assert len(page.photos) == 3 and f"/photo/{sha}/similar?limit=60" in page.links
    assert len(get_page(client, f"/photo/{sha}/similar?limit=60").photos) == 8
    assert len(get_page(client, f"/photo/{sha}/similar?limit=2").photos) == 2
    for bad in ("0", "x", "201", "-1"):
        assert "limit must be a whole number from 1 to 200" in get_page(
            client, f"/photo/{sha}/similar?limit={bad}", status=400).words


def test_a_photo_not_embedded_yet_is_a_calm_note(client, lib):
    for sha, note in ((lib.sha(lib.car), "Not embedded yet: the service embeds labelled photos when it is idle"),
                      (lib.sha(lib.broken), "A file that is not an image has no photos like it")):
        page = get_page(client, f"/photo/{sha}/similar")
        assert note in page.words and page.photos == []
        assert 'class="notice calm"' in client.get(f"/photo/{sha}/similar").text  # not an error
    assert get_page(client, f"/photo/{lib.sha(lib.car)}").photos == [lib.sha(lib.car)]


def test_unknown_photos_are_404(client):
    for url in ("/photo/" + "0" * 64 + "/similar", "/photo/not-a-hash/similar", "/photo/%2e%2e/similar"):
        assert "Not found" in get_page(client, url, status=404).words
    for url in ("/api/similar/" + "0" * 64, "/api/similar/NOT", "/api/similar/" + "A" * 64):
        response = client.get(url)
        assert response.status_code == 404 and response.json() == {"error": "no photo with that content hash"}


def test_the_photo_page_back_link_follows_where_it_came_from(client, lib):
    sha, other = lib.sha(lib.cats[0]), lib.sha(lib.cats[1])
    page = get_page(client, f"/photo/{other}?back=%2Fphoto%2F{sha}")
    assert "← Back to the photo" in page.words and f"/photo/{sha}" in page.links
    assert "← Back to the duplicates" in get_page(client, f"/photo/{other}?back=%2Fduplicates%3Fpage%3D2").words
    for hostile in ("//evil.example", "/photo/../../etc", "/photo/" + "0" * 63 + "\\", "https://evil.example/"):
        assert "Back" not in get_page(client, f"/photo/{other}?back={hostile}").words


# ---- /api/similar ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, params", [
    ([], ""), (["--limit", "3"], "?limit=3"), (["--limit", "1", "--include-missing"], "?limit=1&include_missing=1"),
])
def test_api_similar_is_the_bytes_labels_similar_json_prints(client, lib, args, params):
    for photo in (lib.cats[0], lib.dog):
        sha = lib.sha(photo)
        first = client.get(f"/api/photo/{sha}").json()["path"]  # the content's first present path
        printed = runner.invoke(cli, ["--config", str(lib.config), "similar", first, "--json", *args])
        assert printed.exit_code == 0, printed.output
        response = client.get(f"/api/similar/{sha}{params}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.content == printed.stdout_bytes
    # the copy first by path is asked about: the other path of that content scores 1
    found = client.get(f"/api/similar/{lib.sha(lib.cats[0])}?limit=2").json()
    assert found[0]["path"] == str(lib.cats[0]) and found[0]["similarity"] == 1.0


def test_api_similar_leaves_missing_files_out_unless_asked(client, lib):
    store = open_store(lib.db)
    contents.mark_missing(store, [str(lib.cats[1])])
    store.close()
    sha = lib.sha(lib.cats[0])
    assert str(lib.cats[1]) not in [r["path"] for r in client.get(f"/api/similar/{sha}").json()]
    assert str(lib.cats[1]) in [r["path"] for r in client.get(f"/api/similar/{sha}?include_missing=1").json()]
    assert lib.sha(lib.cats[1]) not in get_page(client, f"/photo/{sha}/similar").photos


def test_api_similar_says_not_yet_and_never_as_the_command_does(client, lib):
    response = client.get(f"/api/similar/{lib.sha(lib.car)}")
    # `labels similar` exits 75 (EX_TEMPFAIL: try again later)
    assert response.status_code == 503 and response.headers["retry-after"] == "60"
    assert "has no embedding yet" in response.json()["error"]
    result = runner.invoke(cli, ["--config", str(lib.config), "similar", str(lib.car)])
    assert result.exit_code == 75
    response = client.get(f"/api/similar/{lib.sha(lib.broken)}")  # `labels similar` exits 1
    assert response.status_code == 409 and "failed to decode" in response.json()["error"]
    response = client.get(f"/api/similar/{lib.sha(lib.dog)}?limit=0")
    assert response.status_code == 400 and response.json()["error"].startswith("limit must be")


# ---- duplicates -----------------------------------------------------------------------------


def finished_page(client, url: str, status: int = 200) -> Page:
    """The duplicates page once its comparison is done (it refreshes itself until then)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = client.get(url)
        if 'http-equiv="refresh"' not in response.text:
            break
        assert time.monotonic() < deadline, "the comparison did not finish"
        time.sleep(0.05)
    assert response.status_code == status, response.text[:500]
    page = Page(response.text)
    assert page.inline == []
    page.html = response.text
    return page


def test_duplicates_page_groups_near_copies_and_marks_exact_copies(client, lib):
    page = finished_page(client, "/duplicates")
    cat0, cat1, dog = lib.sha(lib.cats[0]), lib.sha(lib.cats[1]), lib.sha(lib.dog)
    # the largest group first: cats[0] (two files of it) with its near copy; then the dog's two files
    assert page.photos == [cat0, cat0, cat1, dog, dog]
    assert "2 groups of 5 files" in page.words and "at threshold 0.86" in page.words
    assert "3 near-duplicates" in page.words and "2 exact copies" in page.words
    assert page.html.count("exact-copy") == 4 and page.words.count("exact copy") == 4
    assert page.words.count("320×240") == 3 and re.search(r"320×240 · \d\.\d KB", page.words)
    scores = similarities(page.html)  # against the group's first, 2 decimals (the near copy's 0.99+)
    assert scores[:2] == [1.0, 1.0] and scores[2] >= 0.95
    for sha in {cat0, cat1, dog}:
        assert any(link.startswith(f"/photo/{sha}?back=%2Fduplicates") for link in page.links)
    assert 'aria-current="page">Duplicates' in page.html  # in the navigation, as here


def test_duplicates_page_is_the_commands_groups(client, lib):
    for args, params in (([], ""), (["--threshold", "0.6"], "?threshold=0.6")):
        printed = json.loads(labels_cmd(lib, "duplicates", "--json", *args))
        page = finished_page(client, "/duplicates" + params)
        assert page.photos == [m["sha256"] for g in printed for m in g["members"]]


def test_a_threshold_outside_0_to_1_is_a_400_with_its_reason(client):
    for bad in ("2", "-0.1", "nan", "inf", "x", "1e9"):
        page = get_page(client, f"/duplicates?threshold={bad}", status=400)
        assert "threshold must be a number from 0 to 1" in page.words and page.photos == []
        response = client.get(f"/api/duplicates?threshold={bad}")
        assert response.status_code == 400 and response.json()["error"].startswith("threshold must be")
    assert "page must be a whole number" in get_page(client, "/duplicates?page=0", status=400).words


@pytest.mark.parametrize("args, params", [
    ([], ""), (["--threshold", "0.5"], "?threshold=0.5"), (["--threshold", "1"], "?threshold=1"),
    (["--include-missing"], "?include_missing=1"),
])
def test_api_duplicates_is_the_bytes_labels_duplicates_json_prints(client, lib, args, params):
    printed = runner.invoke(cli, ["--config", str(lib.config), "duplicates", "--json", *args])
    assert printed.exit_code == 0, printed.output
    response = client.get(f"/api/duplicates{params}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.content == printed.stdout_bytes


def test_duplicates_come_a_page_of_groups_at_a_time(client, lib, monkeypatch):
    from labelsd.web import views_duplicates

    monkeypatch.setattr(views_duplicates, "GROUPS_PER_PAGE", 1)
    first = finished_page(client, "/duplicates")
    assert first.photos == [lib.sha(lib.cats[0])] * 2 + [lib.sha(lib.cats[1])]
    assert "/duplicates?page=2" in first.links and "page 1 of 2" in first.words
    second = finished_page(client, "/duplicates?page=2")
    assert second.photos == [lib.sha(lib.dog)] * 2 and "/duplicates" in second.links
    assert finished_page(client, "/duplicates?page=3").photos == []


def test_a_group_larger_than_a_page_shows_its_first_members(client, lib, monkeypatch):
    from labelsd.web import views_duplicates

    monkeypatch.setattr(views_duplicates, "MEMBERS_SHOWN", 2)
    page = finished_page(client, "/duplicates")
    assert len(page.photos) == 4 and "and 1 more in this group" in page.words


def test_a_changed_library_is_said_and_compared_again_on_request(client, lib):
    finished_page(client, "/duplicates")
    store = open_store(lib.db)
    contents.mark_missing(store, [str(lib.cat_copy)])  # the exact copy of cats[0] is gone
    store.close()
    page = finished_page(client, "/duplicates")
    assert "The library has changed since" in page.words and len(page.photos) == 5  # the kept result
    again = next(link for link in page.links if "again=1" in link)
    response = client.get(again, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/duplicates"
    page = finished_page(client, "/duplicates")
    assert "changed since" not in page.words and len(page.photos) == 4
    # the API answers for the library as it is now
    assert len(client.get("/api/duplicates").json()[0]["members"]) == 2


def test_every_name_is_escaped(client, lib):
    sha = lib.sha(lib.cats[0])
    for text in (client.get(f"/photo/{sha}/similar").text, finished_page(client, "/duplicates").html):
        assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;.png" in text
        assert Page(text).inline == []


def test_read_only_shows_both(lib, tmp_path):
    with web_client(lib, tmp_path / "thumbs", read_only=True) as client:
        assert len(get_page(client, f"/photo/{lib.sha(lib.cats[0])}/similar").photos) == 7
        page = finished_page(client, "/duplicates")
        assert len(page.photos) == 5 and [f["method"] for f in page.forms] == ["get", "get"]
        assert client.get("/api/duplicates").status_code == 200
    client.site.close()


def test_both_on_both_databases(store, db_url, tmp_path):
    lib = build_library(store, db_url, tmp_path / "lib")
    add_vectors(lib)
    sha = lib.sha(lib.cats[0])
    similar = runner.invoke(cli, ["--config", str(lib.config), "similar", str(lib.cats[0]), "--json"])
    duplicates = runner.invoke(cli, ["--config", str(lib.config), "duplicates", "--json"])
    with web_client(lib, tmp_path / "thumbs") as client:
        assert client.get(f"/api/similar/{sha}").content == similar.stdout_bytes
        assert client.get("/api/duplicates").content == duplicates.stdout_bytes
        assert get_page(client, f"/photo/{sha}/similar").photos[0] == lib.sha(lib.cats[1])
        assert finished_page(client, "/duplicates").photos == [sha, lib.sha(lib.cats[1])]
    client.site.close()


# ---- the comparisons behind the page (web/dupjobs.py) -------------------------------------


def wait_for(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Endless:
    """A find_duplicates that compares for ever (a threshold typed by mistake on a large
    library), reporting progress as the real one does, until its progress hook stops it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, reader, *, threshold, include_missing, family, progress):
        self.calls += 1
        done = 0
        while True:
            progress(done, 10**9)
            done += 1
            time.sleep(0.001)


def test_a_comparison_no_one_waits_for_is_stopped(monkeypatch):
    from labelsd.web import dupjobs

    endless = Endless()
    monkeypatch.setattr(dupjobs, "find_duplicates", endless)
    monkeypatch.setattr(dupjobs, "ABANDON_S", 0.3)
    jobs = dupjobs.DuplicateJobs(lambda: None)
    try:
        ask = dupjobs.Ask(0.1, False, None)
        job = jobs.ask(ask, ("state",))
        wait_for(lambda: job.done > 0, "the comparison to start")
        assert jobs.ask(ask, ("state",)) is job and not job.finished  # asked again: the same one
        assert job.ended.wait(DEADLINE_S) and job.abandoned and job.result is None
        again = jobs.ask(ask, ("state",))  # asked for after it stopped: compared anew
        assert again is not job and endless.calls <= 2
    finally:
        jobs.stop()
    assert again.ended.wait(DEADLINE_S) and again.abandoned  # the server stops: so does it
    assert not jobs._thread.is_alive()


def test_comparisons_run_one_at_a_time_and_a_queue_too_long_is_busy(monkeypatch):
    from labelsd.web import dupjobs

    monkeypatch.setattr(dupjobs, "find_duplicates", Endless())
    jobs = dupjobs.DuplicateJobs(lambda: None)
    try:
        running = jobs.ask(dupjobs.Ask(0.0, False, None), ())
        wait_for(lambda: running.done > 0, "the first comparison to start")
        waiting = [jobs.ask(dupjobs.Ask(t / 10, False, None), ()) for t in range(1, dupjobs.MAX_WAITING + 1)]
        assert all(job.started_at is None for job in waiting)  # behind the one running
        with pytest.raises(dupjobs.Busy, match="comparisons are waiting already"):
            jobs.ask(dupjobs.Ask(0.99, False, None), ())
        assert jobs.ask(dupjobs.Ask(0.1, False, None), ()) is waiting[0]  # asked again: no new one
    finally:
        jobs.stop()
    assert all(job.finished and job.abandoned for job in [running, *waiting])


def test_a_server_that_stops_answers_whoever_waits_for_a_comparison(client, monkeypatch):
    """uvicorn's shutdown cancels the comparisons first (web/server.py): /api/duplicates
    is then answered at once, not cancelled with a traceback when the time is up."""
    import threading

    from labelsd.web import dupjobs

    monkeypatch.setattr(dupjobs, "find_duplicates", Endless())
    jobs = client.site.duplicates

    def stop_once_started():
        wait_for(lambda: any(job.done > 0 for job in jobs._jobs.values()), "the comparison to start")
        jobs.cancel()

    stopper = threading.Thread(target=stop_once_started)
    stopper.start()
    response = client.get("/api/duplicates")
    stopper.join()
    assert response.status_code == 503 and response.json() == {"error": "the server is stopping"}


def test_a_waiting_page_says_how_far_it_is_and_looks_again(client, monkeypatch):
    from labelsd.web import dupjobs

    monkeypatch.setattr(dupjobs, "find_duplicates", Endless())
    response = client.get("/duplicates?threshold=0.5")
    assert response.status_code == 200
    assert '<meta http-equiv="refresh" content="2; url=/duplicates?threshold=0.5">' in response.text
    page = Page(response.text)
    assert "about a minute for 100,000 photos" in page.words and page.photos == []
    wait_for(lambda: "% done" in client.get("/duplicates?threshold=0.5").text, "the progress")
    # `again` while it runs: the same comparison, and the address without `again`
    response = client.get("/duplicates?threshold=0.5&again=1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/duplicates?threshold=0.5"


def test_pairs_above_reports_progress_and_stops_when_told():
    import numpy as np

    from labelsd.vectors import codec, scan
    from labelsd.vectors.library import VectorSet
    from labelsd.vectors.matrix import RECORD
    from labelsd.vectors.spaces import Space

    rows = np.zeros(10, RECORD)
    rows["code"] = codec.encode(np.random.default_rng(1).random((10, 64)) ** 2)
    rows["inv_norm"] = codec.inverse_norms(rows["code"])
    vectors = VectorSet(Space(1, "m", codec.CODEC, "t"), [rows])
    seen = []
    list(scan.pairs_above(vectors, 0.5, block=4, progress=lambda done, total: seen.append((done, total))))
    assert seen == [(i, 6) for i in range(6)]  # 3 blocks of rows: 6 block pairs

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(scan.pairs_above(vectors, 0.5, block=4, progress=stop))
