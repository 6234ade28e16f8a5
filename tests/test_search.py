"""Search: query text in, images out, against a real store populated through
the queue exactly as the service's writer does it.

`add_images` is also used by test_cli_query.py and test_tags.py, `add_library`
by test_cli_query.py (tests/ is on sys.path: `from test_search import add_images`)."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from labelsd import records
from labelsd.model.taxonomy import class_by_index
from labelsd.paths import canonical_path
from labelsd.records import Prediction
from labelsd.serve import query
from labelsd.store import contents, tags, workqueue
from labelsd.store.schema import Prediction as PredictionRow
from labelsd.store.schema import TrackedPath

MODEL = "test-inception"


def predictions(top3: list[tuple[int, float]]) -> list[Prediction]:
    out = []
    for rank, (index, score) in enumerate(top3, start=1):
        cls = class_by_index(index)
        out.append(Prediction(rank=rank, label=cls.label, wnid=cls.wnid, class_index=index,
                              score=score))
    return out


def add_images(store, images: dict[str, list[tuple[int, float]]], *,
               sha_of: dict[str, str] | None = None) -> dict[str, str]:
    """Classify each path (a name -> top-3 of (class index, score)) through
    enqueue + claim + record_outcomes. `sha_of` gives two paths one content.
    Returns name -> stored (canonical) path."""
    sha_of = sha_of or {}
    stored = {name: canonical_path(name) for name in images}
    workqueue.enqueue(store, list(stored.values()))
    claims = {c.path: c for c in workqueue.claim(store, "test-node", limit=len(images) + 10)}
    outcomes = []
    for name, top3 in images.items():
        sha = sha_of.get(name) or hashlib.sha256(name.encode()).hexdigest()
        outcomes.append(records.Outcome(
            claim=claims[stored[name]], kind="classified", sha256=sha, size=1000,
            mtime_ns=1, width=640, height=480, format="JPEG", model=MODEL,
            predictions=predictions(top3)))
    contents.record_outcomes(store, "test-node", outcomes)
    return stored


LIBRARY = {
    "tabby.jpg": [(281, 0.90), (282, 0.05), (285, 0.02)],  # tabby, tiger cat, Egyptian cat
    "persian.jpg": [(283, 0.70), (281, 0.20), (332, 0.05)],  # Persian cat, tabby, Angora
    "shy_cat.jpg": [(999, 0.60), (436, 0.20), (284, 0.05)],  # toilet tissue, beach wagon, Siamese
    "retriever.jpg": [(207, 0.85), (208, 0.10), (222, 0.02)],  # golden/Labrador retriever, kuvasz
    "sports_car.jpg": [(817, 0.80), (511, 0.10), (479, 0.05)],  # sports car, convertible, car wheel
    "truck.jpg": [(569, 0.75), (479, 0.15), (933, 0.01)],  # garbage truck, car wheel, cheeseburger
    "hotdog.jpg": [(934, 0.95), (931, 0.02), (933, 0.01)],  # hotdog, bagel, cheeseburger
    "gone_cat.jpg": [(281, 0.99), (282, 0.01), (285, 0.00)],  # a tabby whose file is gone
}


def add_library(store, tmp_path, monkeypatch, tagged: dict[str, list[str]]) -> dict[str, str]:
    """The LIBRARY in tmp_path/photos (the working directory), `tagged` name ->
    tags, and gone_cat.jpg missing. Returns name -> stored path."""
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.chdir(photos)
    paths = add_images(store, LIBRARY)
    for name, its_tags in tagged.items():
        tags.add_tags(store, paths[name], its_tags)
    contents.mark_missing(store, [paths["gone_cat.jpg"]])
    return paths


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    return add_library(store, tmp_path, monkeypatch, {
        "persian.jpg": ["fluffy"], "tabby.jpg": ["Fluffy", "indoor"], "hotdog.jpg": ["Lunch"]})


def names(records) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in records]


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        # WordNet: a word means every class at or below it, best score first
        ("cat", {}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]),
        ("dog", {}, ["retriever.jpg"]),  # the hotdog is food, not a dog
        ("retriever", {}, ["retriever.jpg"]),
        ("animal", {}, ["tabby.jpg", "retriever.jpg", "persian.jpg", "shy_cat.jpg"]),
        ("vehicle", {}, ["sports_car.jpg", "truck.jpg", "shy_cat.jpg"]),  # beach wagon
        ("car", {}, ["sports_car.jpg", "shy_cat.jpg"]),
        ("food", {}, ["hotdog.jpg", "truck.jpg"]),  # cheeseburger at 1%
        ("persian", {}, ["persian.jpg"]),  # a word of a label
        ("tabby", {}, ["tabby.jpg", "persian.jpg"]),
        ("hotdog", {}, ["hotdog.jpg"]),
        # case, spaces, underscores and hyphens do not matter
        ("CAT", {}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]),
        ("  Cat ", {}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]),
        ("Sports Car", {}, ["sports_car.jpg"]),
        ("sports_car", {}, ["sports_car.jpg"]),
        ("sports-car", {}, ["sports_car.jpg"]),
        ("sports   car", {}, ["sports_car.jpg"]),
        ("Golden_Retriever", {}, ["retriever.jpg"]),
        ("hot-dog", {}, ["hotdog.jpg"]),
        # --exact turns the hierarchy (and word matching) off
        ("cat", {"exact": True}, []),
        ("tabby", {"exact": True}, ["tabby.jpg", "persian.jpg"]),
        ("persian", {"exact": True}, []),
        ("persian cat", {"exact": True}, ["persian.jpg"]),
        ("PERSIAN_CAT", {"exact": True}, ["persian.jpg"]),
        # --min-score filters on the matching label's score
        ("cat", {"min_score": 0.5}, ["tabby.jpg", "persian.jpg"]),
        ("cat", {"min_score": 0.8}, ["tabby.jpg"]),
        ("cat", {"min_score": 0.95}, []),
        ("tabby", {"min_score": 0.2}, ["tabby.jpg", "persian.jpg"]),
        ("tabby", {"min_score": 0.21}, ["tabby.jpg"]),
        ("car", {"min_score": 0.0}, ["sports_car.jpg", "shy_cat.jpg"]),
        # --tag: all of them, case-insensitively
        ("cat", {"tags": ["fluffy"]}, ["tabby.jpg", "persian.jpg"]),
        ("cat", {"tags": ["FLUFFY"]}, ["tabby.jpg", "persian.jpg"]),
        ("cat", {"tags": ["fluffy", "indoor"]}, ["tabby.jpg"]),
        ("cat", {"tags": ["nosuchtag"]}, []),
        ("dog", {"tags": ["fluffy"]}, []),
        # --limit keeps the best
        ("cat", {"limit": 1}, ["tabby.jpg"]),
        ("cat", {"limit": 2}, ["tabby.jpg", "persian.jpg"]),
        ("cat", {"limit": 100}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]),
        # missing files: left out unless asked for (then ranked like the rest)
        ("cat", {"include_missing": True},
         ["gone_cat.jpg", "tabby.jpg", "persian.jpg", "shy_cat.jpg"]),
        ("tabby", {"include_missing": True, "limit": 1}, ["gone_cat.jpg"]),
        # a tag is a query too (case-insensitive), even when no class matches
        ("lunch", {}, ["hotdog.jpg"]),
        ("LUNCH", {}, ["hotdog.jpg"]),
        (" Lunch ", {}, ["hotdog.jpg"]),
        ("indoor", {}, ["tabby.jpg"]),
        ("fluffy", {}, ["persian.jpg", "tabby.jpg"]),  # tag-only matches: by path
        ("lunch", {"min_score": 0.9}, ["hotdog.jpg"]),  # a tag is no guess: no floor hides it
        ("lunch", {"tags": ["fluffy"]}, []),
        # nothing matches: nothing found, no error
        ("", {}, []),
        ("   ", {}, []),
        ("unicorn", {}, []),
        ("東京", {}, []),
        ("cats and dogs", {}, []),
        # query text is data: never SQL, never a LIKE pattern
        ("%", {}, []),
        ("_", {}, []),
        ("%cat%", {}, []),
        ("c_t", {}, []),
        ("*", {}, []),
        ("cat' OR '1'='1", {}, []),
        ("cat\" OR 1=1 --", {}, []),
        ("'; DROP TABLE predictions; --", {}, []),
        ("cat); DELETE FROM paths; --", {}, []),
        ("?", {}, []),
        (":query", {}, []),
        ("\\", {}, []),
    ],
)
def test_search(store, library, text, options, expected):
    # min_score 0: every match (the default floor has its own test, below)
    assert names(query.search(store, text, **{"min_score": 0.0, **options})) == expected


@pytest.mark.parametrize(("text", "options", "expected", "hidden"), [
    ("cat", {}, ["tabby.jpg", "persian.jpg"], 1),  # the shy cat's Siamese 5%: noise
    ("food", {}, ["hotdog.jpg"], 1),  # the truck's cheeseburger 1%
    ("animal", {}, ["tabby.jpg", "retriever.jpg", "persian.jpg"], 1),
    ("cat", {"min_score": 0.0}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"], 0),
    ("cat", {"min_score": 0.05}, ["tabby.jpg", "persian.jpg", "shy_cat.jpg"], 0),
    ("cat", {"min_score": 0.8}, ["tabby.jpg"], 2),
    ("cat", {"tags": ["indoor"]}, ["tabby.jpg"], 0),  # the hidden count is narrowed alike
    ("cat", {"include_missing": True}, ["gone_cat.jpg", "tabby.jpg", "persian.jpg"], 1),
    ("cat", {"limit": 1}, ["tabby.jpg"], 1),  # what the floor hid, not what the limit cut
    ("hotdog", {}, ["hotdog.jpg"], 0),
])
def test_the_default_floor_hides_near_zero_matches_and_counts_them(store, library, text, options,
                                                                   expected, hidden):
    # Issue 26: `labels search animal` listed a green square found by `jellyfish 1%`.
    result = query.find(store, text, **options)
    assert names(result.records) == expected
    assert result.hidden == hidden
    assert result.floor == options.get("min_score", 0.1)


def test_a_tag_finds_what_the_floor_hides_as_a_tag_match(store, library):
    tags.add_tags(store, library["shy_cat.jpg"], ["cat"])  # below the floor as a Siamese, tagged
    result = query.find(store, "cat")
    assert names(result.records) == ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]
    assert result.reason(result.found[-1]) == "tag cat" and result.hidden == 0


def test_search_harms_nothing(store, library):
    """SQL-looking queries leave every table as it was."""
    def snapshot():
        with store.read() as session:
            return (session.scalar(select(func.count()).select_from(TrackedPath)),
                    session.scalar(select(func.count()).select_from(PredictionRow)))

    before = snapshot()
    for text in ("'; DROP TABLE predictions; --", "x'); DELETE FROM paths; --", "%", "_%_"):
        assert query.search(store, text) == []
        query.tag_counts(store)
    assert snapshot() == before == (len(LIBRARY), 3 * len(LIBRARY))
    assert names(query.search(store, "cat", min_score=0)) == ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]


def test_hits_carry_the_best_matching_score(store, library):
    hits = query.search_hits(store, "cat", min_score=0)
    assert [(h.path.rsplit("/", 1)[-1], h.score) for h in hits] == [
        ("tabby.jpg", pytest.approx(0.90)), ("persian.jpg", pytest.approx(0.70)),
        ("shy_cat.jpg", pytest.approx(0.05))]


def test_tag_only_matches_rank_after_label_matches(store, library):
    tags.add_tags(store, library["sports_car.jpg"], ["cat"])  # someone's car is called Cat
    tags.add_tags(store, library["tabby.jpg"], ["CAT"])  # found by label already: once only
    hits = query.search_hits(store, "cat", min_score=0)
    assert [h.path.rsplit("/", 1)[-1] for h in hits] == [
        "tabby.jpg", "persian.jpg", "shy_cat.jpg", "sports_car.jpg"]
    assert hits[-1].score is None
    assert names(query.search(store, "cat", limit=3, min_score=0)) == [
        "tabby.jpg", "persian.jpg", "shy_cat.jpg"]
    assert names(query.search(store, "cat", limit=4, min_score=0))[-1] == "sports_car.jpg"
    assert names(query.search(store, "cat", min_score=0.01)) == [  # a tag match passes any floor
        "tabby.jpg", "persian.jpg", "shy_cat.jpg", "sports_car.jpg"]


def test_records_are_complete(store, library):
    (record,) = query.search(store, "persian")
    assert record.status == "done"
    assert [p.label for p in record.labels] == ["Persian cat", "tabby", "Angora"]
    assert record.tags == ["fluffy"]
    assert (record.width, record.height) == (640, 480)


def test_a_copy_is_found_at_every_path(store, tmp_path):
    sha = "ab" * 32
    paths = add_images(store, {str(tmp_path / "a.jpg"): [(281, 0.9), (282, 0.05), (285, 0.01)],
                               str(tmp_path / "b.jpg"): [(281, 0.9), (282, 0.05), (285, 0.01)]},
                       sha_of={str(tmp_path / "a.jpg"): sha, str(tmp_path / "b.jpg"): sha})
    assert [r.path for r in query.search(store, "cat")] == sorted(paths.values())


def test_a_requeued_image_is_not_found_by_its_old_labels(store, library):
    """A changed file waits in the queue: its stored labels describe older bytes."""
    workqueue.enqueue(store, [library["tabby.jpg"]], force=True)
    assert names(query.search(store, "cat", min_score=0)) == ["persian.jpg", "shy_cat.jpg"]
    workqueue.enqueue(store, [library["shy_cat.jpg"]], force=True)
    assert query.find(store, "cat").hidden == 0  # nor counted as hidden by the floor


def test_an_empty_store_finds_nothing(store):
    assert query.search(store, "cat") == []
    assert query.search(store, "cat", tags=["x"], limit=5, include_missing=True) == []


# ---- words in their base form (WordNet's morphy for nouns) ------------------------------


@pytest.mark.parametrize(("word", "base"), [
    ("cats", "cat"), ("geese", "goose"), ("puppies", "puppy"), ("boxes", "box"),
    ("churches", "church"), ("dishes", "dish"), ("women", "woman"), ("mice", "mouse"),
    ("golden retrievers", "golden retriever"), ("Persian_Cats", "persian cat"),
])
def test_base_forms_follow_morphy(word, base):
    from labelsd.model.taxonomy import base_forms

    assert base in base_forms(word)


@pytest.mark.parametrize("word", ["glass", "moss", "ox"])
def test_words_morphy_leaves_alone(word):
    from labelsd.model.taxonomy import base_forms

    assert base_forms(word) == (word,)


@pytest.mark.parametrize(("plural", "singular"), [
    ("cats", "cat"), ("dogs", "dog"), ("geese", "goose"), ("foxes", "fox"),
    ("butterflies", "butterfly"), ("golden retrievers", "golden retriever"), ("mice", "mouse"),
])
def test_a_plural_selects_what_its_singular_selects(plural, singular):
    from labelsd.model.taxonomy import select_classes

    assert select_classes(plural) == select_classes(singular) != frozenset()


def test_the_exceptions_come_from_wordnet_noun_exc():
    from labelsd.model import taxonomy

    exceptions = taxonomy._data()["noun_exceptions"]
    assert exceptions["geese"] == ["goose"] and exceptions["teeth"] == ["tooth"]
    assert len(exceptions) > 2000  # the whole of noun.exc, not a hand-picked few


@pytest.mark.parametrize(("typo", "meant"), [("dgo", "dog"), ("cta", "cat"), ("retreiver", "retriever"),
                                             ("vehicel", "vehicle")])
def test_a_typo_suggests_the_word_meant_first(typo, meant):
    from labelsd.model.taxonomy import select_classes, suggest

    assert select_classes(typo) == frozenset()
    assert suggest(typo)[0] == meant
