"""Every reader honours a person's judgements (store/judgements.py): search (and its
WordNet ancestors, --min-score, tag matches, its ranking), stats' and tags' counts,
the records of list/show/export, and the fast paths (search --json's text, the
read-only reader). On SQLite and PostgreSQL, over test_search's LIBRARY:

    tabby.jpg    tabby 90%, tiger cat 5%, Egyptian cat 2%    (tags Fluffy, indoor)
    persian.jpg  Persian cat 70%, tabby 20%, Angora 5%       (tag fluffy)
    shy_cat.jpg  toilet tissue 60%, beach wagon 20%, Siamese cat 5%   (its one cat label)
"""

from __future__ import annotations

import json

import pytest

from labelsd.records import PhotoMeta
from labelsd.serve import query
from labelsd.serve.reader import as_reader, open_reader
from labelsd.store import judgements, tags
from labelsd.store.photometa import import_keywords
from test_search import names

TABBY, TIGER_CAT, PERSIAN_CAT, SIAMESE = 281, 282, 283, 284


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    from test_search import add_library

    return add_library(store, tmp_path, monkeypatch, {
        "persian.jpg": ["fluffy"], "tabby.jpg": ["Fluffy", "indoor"], "hotdog.jpg": ["Lunch"]})


def sha_of(store, path) -> str:
    return store.record(path).sha256


def judge(store, library, action: str, name: str, class_index: int) -> None:
    getattr(judgements, action)(store, [sha_of(store, library[name])], class_index)


def readers(store, db_url):
    """The store, and where there is one, the read-only sqlite3 reader `labels` uses."""
    yield store
    if "://" not in db_url:
        reader = open_reader(db_url)
        try:
            yield reader
        finally:
            reader.close()


# ---- search -------------------------------------------------------------------------


def test_a_photo_whose_only_cat_label_is_rejected_is_not_found_by_cat(store, db_url, library):
    judge(store, library, "reject", "shy_cat.jpg", SIAMESE)
    judge(store, library, "reject", "persian.jpg", TABBY)  # it keeps Persian cat
    for source in readers(store, db_url):
        assert names(query.search(source, "cat")) == ["tabby.jpg", "persian.jpg"]
        assert names(query.search(source, "siamese")) == []
        assert names(query.search(source, "tabby")) == ["tabby.jpg"]
        assert names(query.search(source, "domestic cat")) == ["tabby.jpg", "persian.jpg"]
        assert [h.path for h in query.search_hits(source, "animal")] == [
            library[n] for n in ("tabby.jpg", "retriever.jpg", "persian.jpg")]


def test_a_rejected_label_no_longer_ranks_or_passes_min_score(store, db_url, library):
    judge(store, library, "reject", "tabby.jpg", TABBY)  # its best cat label left: tiger cat 5%
    for source in readers(store, db_url):
        hits = query.search_hits(source, "cat", min_score=0)  # no floor: the 5% labels too
        assert [(h.path, round(h.score, 2)) for h in hits] == [  # (ties by path)
            (library["persian.jpg"], 0.7), (library["shy_cat.jpg"], 0.05),
            (library["tabby.jpg"], 0.05)]
        assert names(query.search(source, "cat", min_score=0.5)) == ["persian.jpg"]
        assert names(query.search(source, "cat", exact=False, limit=1)) == ["persian.jpg"]
        assert names(query.search(source, "tabby", exact=True)) == ["persian.jpg"]
        result = query.find(source, "cat", min_score=0)
        assert [result.reason(r) for r in result.found] == ["Persian cat 70%", "Siamese cat 5%",
                                                              "tiger cat 5%"]


def test_confirmed_labels_rank_first(store, db_url, library):
    judge(store, library, "confirm", "shy_cat.jpg", SIAMESE)
    judge(store, library, "confirm", "persian.jpg", TABBY)
    for source in readers(store, db_url):
        assert names(query.search(source, "cat")) == ["persian.jpg", "shy_cat.jpg", "tabby.jpg"]
        assert names(query.search(source, "cat", limit=1)) == ["persian.jpg"]
        found = query.find(source, "cat", as_json=True).texts
        assert [json.loads(t)["path"] for t in found] == [
            library[n] for n in ("persian.jpg", "shy_cat.jpg", "tabby.jpg")]
        # a confirmed hit ranks, and is shown, by its confirmed label
        result = query.find(source, "cat")
        assert result.reason(result.found[0]) == "tabby 20% (confirmed)"
        assert [round(h.score, 2) for h in query.search_hits(source, "cat")] == [0.2, 0.05, 0.9]


def test_a_photo_found_by_a_tag_once_its_label_is_rejected(store, db_url, library):
    tags.add_tags(store, library["shy_cat.jpg"], ["cat nap"])
    judge(store, library, "reject", "shy_cat.jpg", SIAMESE)
    for source in readers(store, db_url):
        result = query.find(source, "cat")
        assert [r["path"] for r in result.found] == [library[n] for n in ("tabby.jpg", "persian.jpg", "shy_cat.jpg")]
        assert result.reason(result.found[-1]) == "tag cat nap"


def test_search_json_is_the_records_text(store, db_url, library):
    judge(store, library, "reject", "tabby.jpg", TABBY)
    judge(store, library, "confirm", "tabby.jpg", TIGER_CAT)
    for source in readers(store, db_url):
        texts = query.find(source, "cat", as_json=True).texts
        records = query.find(source, "cat").found
        assert texts == [json.dumps(r, ensure_ascii=False) for r in records]
        tabby = next(r for r in records if r["path"] == library["tabby.jpg"])
        assert [(p["label"], p["confirmed"]) for p in tabby["labels"]] == [
            ("tiger cat", True), ("Egyptian cat", False)]
        assert [(r["label"], r["source"]) for r in tabby["rejected"]] == [("tabby", "cli")]


# ---- an imported keyword naming a rejected label goes with it ------------------------


def imported(store, path, *keywords) -> None:
    with store.write() as session:
        import_keywords(session, sha_of(store, path), PhotoMeta(keywords=keywords))


def test_an_imported_keyword_naming_a_rejected_label_is_hidden_with_it(store, db_url, library):
    imported(store, library["persian.jpg"], "Tabby", "garden")
    imported(store, library["retriever.jpg"], "Tabby")  # its keyword, no such label: stays
    tags.add_tags(store, library["tabby.jpg"], ["tabby"])  # given by the person: stays
    judge(store, library, "reject", "persian.jpg", TABBY)
    judge(store, library, "reject", "tabby.jpg", TABBY)
    for source in readers(store, db_url):
        assert source.record(library["persian.jpg"]).tags == ["fluffy", "garden"]
        assert names(query.search(source, "tabby")) == ["retriever.jpg", "tabby.jpg"]
        assert names(query.search(source, "cat", tags=["TABBY"], min_score=0)) == ["tabby.jpg"]  # not persian
        counts = {c["tag"].casefold(): c for c in query.tag_counts(source)}
        assert (counts["tabby"]["count"], counts["tabby"]["contents"], counts["tabby"]["imported"]) == (
            2, 2, 1)
        stats = query.stats(source)
        assert (stats.tags, stats.tagged_contents) == (5, 4)  # fluffy indoor lunch garden tabby

    # rejected where it was the only such keyword: the tag leaves the counts
    judgements.unreject(store, [sha_of(store, library["tabby.jpg"])], TABBY)
    tags.remove_tags(store, library["tabby.jpg"], ["tabby"])
    judge(store, library, "reject", "retriever.jpg", 207)  # golden retriever: not its keyword
    for source in readers(store, db_url):
        counts = {c["tag"].casefold(): c for c in query.tag_counts(source)}
        assert counts["tabby"]["contents"] == 1  # the retriever's
    imported(store, library["shy_cat.jpg"], "Siamese cat")
    judge(store, library, "reject", "shy_cat.jpg", SIAMESE)
    for source in readers(store, db_url):
        assert "siamese cat" not in {c["tag"].casefold() for c in query.tag_counts(source)}
        assert query.matching_tag_keys(as_reader(source), "siamese") == ()
        assert names(query.search(source, "siamese")) == []
        stats = query.stats(source)
        assert (stats.tags, stats.tagged_contents) == (5, 4)  # shy_cat's one tag is hidden


# ---- stats --------------------------------------------------------------------------


def test_stats_count_a_photo_under_its_first_label_left(store, db_url, library):
    before = dict(query.stats(store).top_labels)
    judge(store, library, "reject", "tabby.jpg", TABBY)
    judge(store, library, "reject", "persian.jpg", PERSIAN_CAT)
    judge(store, library, "reject", "persian.jpg", TABBY)
    judge(store, library, "reject", "hotdog.jpg", 934)
    judge(store, library, "reject", "hotdog.jpg", 931)
    judge(store, library, "reject", "hotdog.jpg", 933)  # nothing left to count it by
    for source in readers(store, db_url):
        top = dict(query.stats(source, top=20).top_labels)
        assert before.get("tabby") == 1 and "tabby" not in top  # gone_cat.jpg is missing
        assert top["tiger cat"] == 1 and top["Angora"] == 1
        assert "Persian cat" not in top and "hotdog" not in top and "bagel" not in top
        assert sum(top.values()) == sum(before.values()) - 1
        assert list(dict(query.stats(source, top=2).top_labels).values()) == [1, 1]


def test_the_floor_counts_no_rejected_label_and_hides_no_confirmed_one(store, db_url, library):
    # issue 26's floor meets issue 27's judgements: what the floor hid is said on
    # stderr, so a rejected label under it is not counted, and a confirmed one is shown
    before = {id(s): query.find(s, "siamese").hidden for s in readers(store, db_url)}
    assert set(before.values()) == {1}  # the shy cat's Siamese cat 5%
    judge(store, library, "reject", "shy_cat.jpg", SIAMESE)
    for source in readers(store, db_url):
        result = query.find(source, "siamese")
        assert (result.found, result.hidden) == ([], 0)
    judge(store, library, "unreject", "shy_cat.jpg", SIAMESE)
    judge(store, library, "confirm", "shy_cat.jpg", SIAMESE)
    for source in readers(store, db_url):
        result = query.find(source, "siamese")
        assert (names(result.records), result.hidden) == (["shy_cat.jpg"], 0)
        assert result.reason(result.found[0]) == "Siamese cat 5% (confirmed)"
