"""A search with a limit (`--limit`, a page of `labels serve`) reads its hits first and
then their records (query.FEW): it must find exactly the first records of the same
search without a limit, dicts and JSON text alike, whatever narrows it."""

from __future__ import annotations

import pytest

from labelsd.serve import query
from labelsd.store import workqueue
from test_search import add_library


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    paths = add_library(store, tmp_path, monkeypatch, {
        "persian.jpg": ["fluffy cat"], "tabby.jpg": ["Fluffy", "indoor"], "hotdog.jpg": ["cat food"],
        "truck.jpg": ["cat"]})
    workqueue.enqueue(store, [paths["truck.jpg"]])  # changed since: pending, found by its tag
    return paths


@pytest.mark.parametrize("text, options", [
    ("cat", {}), ("cat", {"include_missing": True}), ("animal", {"tags": ("fluffy",)}),
    ("fluffy", {}), ("vehicle", {"min_score": 0.1}), ("cat", {"exact": True}), ("nothing", {}),
])
def test_a_limited_search_is_the_first_records_of_the_whole_one(store, library, text, options):
    whole = query.find(store, text, **options)
    whole_json = query.find(store, text, as_json=True, **options)
    assert len(whole.found) == len(whole_json.texts)
    for limit in (1, 2, 3, len(whole.found) + 1, query.FEW):
        cut = query.find(store, text, limit=limit, **options)
        assert cut.found == whole.found[:limit], limit
        assert query.find(store, text, limit=limit, as_json=True, **options).texts == whole_json.texts[:limit]
        assert (cut.classes, cut.tag_keys, cut.suggestions) == (whole.classes, whole.tag_keys,
                                                               whole.suggestions)
