"""Tags belong to the content: trimmed, case-preserving, matched case-insensitively,
surviving renames and shared by copies."""

from __future__ import annotations

import pytest

from labelsd.errors import NotTracked
from labelsd.serve import query
from labelsd.store import contents, tags, workqueue
from test_search import add_images

CAT = [(281, 0.9), (282, 0.05), (285, 0.01)]


@pytest.fixture
def cat(store, tmp_path):
    return add_images(store, {str(tmp_path / "cat.jpg"): CAT})[str(tmp_path / "cat.jpg")]


def test_tag_and_untag_round_trip(store, cat):
    assert tags.add_tags(store, cat, ["vacation", "Ferien 🏖", "東京"]) == [
        "Ferien 🏖", "vacation", "東京"]
    assert store.record(cat).tags == ["Ferien 🏖", "vacation", "東京"]
    assert tags.remove_tags(store, cat, ["ferien 🏖"]) == (["vacation", "東京"], [])
    assert tags.remove_tags(store, cat, ["東京", "VACATION", "Missing"]) == ([], ["Missing"])
    assert store.record(cat).tags == []


def test_tags_are_trimmed_and_keep_their_case(store, cat):
    assert tags.add_tags(store, cat, ["  Beach Day \t"]) == ["Beach Day"]


def test_retagging_in_another_case_keeps_one(store, cat):
    tags.add_tags(store, cat, ["vacation"])
    assert tags.add_tags(store, cat, ["Vacation", "VACATION"]) == ["vacation"]
    assert tags.add_tags(store, cat, ["Work", "work"]) == ["vacation", "Work"]
    assert [(c["tag"], c["count"]) for c in query.tag_counts(store)] == [("vacation", 1), ("Work", 1)]


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "x" * 201])
def test_an_empty_or_overlong_tag_is_refused(store, cat, bad):
    with pytest.raises(tags.InvalidTag):
        tags.add_tags(store, cat, ["fine", bad])
    assert store.record(cat).tags == []  # nothing half-done


def test_untracked_paths_are_named(store, tmp_path, cat):
    with pytest.raises(NotTracked, match="not tracked"):
        tags.add_tags(store, tmp_path / "nope.jpg", ["x"])
    with pytest.raises(NotTracked, match="not tracked"):
        tags.remove_tags(store, tmp_path / "nope.jpg", ["x"])


def test_a_path_not_read_yet_cannot_be_tagged(store, tmp_path):
    workqueue.enqueue(store, [str(tmp_path / "new.jpg")])
    with pytest.raises(NotTracked, match="not been read yet"):
        tags.add_tags(store, tmp_path / "new.jpg", ["x"])


def test_tags_follow_a_rename(store, tmp_path, cat):
    tags.add_tags(store, cat, ["Ferien 🏖"])
    assert contents.move_path(store, cat, str(tmp_path / "renamed.jpg"))
    assert store.record(str(tmp_path / "renamed.jpg")).tags == ["Ferien 🏖"]
    assert [r.path.rsplit("/", 1)[-1] for r in query.search(store, "ferien 🏖")] == [
        "renamed.jpg"]


def test_tags_apply_to_every_copy(store, tmp_path):
    sha = "cd" * 32
    a, b = str(tmp_path / "a.jpg"), str(tmp_path / "copy of a.jpg")
    add_images(store, {a: CAT, b: CAT}, sha_of={a: sha, b: sha})
    tags.add_tags(store, a, ["東京"])
    assert store.record(b).tags == ["東京"]
    (count,) = query.tag_counts(store)
    assert (count["tag"], count["count"], count["contents"]) == ("東京", 2, 1)
    tags.remove_tags(store, b, ["東京"])
    assert store.record(a).tags == []


def test_tag_counts(store, tmp_path):
    paths = add_images(store, {str(tmp_path / f"{i}.jpg"): CAT for i in range(3)})
    p0, p1, p2 = paths.values()
    tags.add_tags(store, p0, ["a", "b"])
    tags.add_tags(store, p1, ["b"])
    tags.add_tags(store, p2, ["B"])  # same tag: counted together (shown in one spelling)
    counts = query.tag_counts(store)
    assert [(c["tag"].casefold(), c["count"], c["contents"]) for c in counts] == [("b", 3, 3), ("a", 1, 1)]
    assert counts[1] == {"tag": "a", "count": 1, "contents": 1, "imported": 0}
    assert query.stats(store).tags == 2


def test_a_photo_saved_over_through_a_rename_keeps_its_tags(store, tmp_path):
    """An editor that writes `IMG.tmp.jpg` and renames it over `IMG.jpg`: the new
    version (classified already under its temporary name) keeps IMG.jpg's tags, and
    its own. A photo moved onto a path that was missing does not take the tags."""
    photo, edit, gone, other = (str(tmp_path / n) for n in
                                ("IMG.jpg", "IMG.tmp.jpg", "gone.jpg", "other.jpg"))
    add_images(store, {photo: CAT, edit: CAT, gone: CAT, other: CAT},
               sha_of={photo: "a1" * 32, edit: "b2" * 32, gone: "c3" * 32, other: "d4" * 32})
    tags.add_tags(store, photo, ["Grandma"])
    tags.add_tags(store, edit, ["draft"])
    tags.add_tags(store, gone, ["old"])
    assert contents.move_path(store, edit, photo)
    assert store.record(photo).sha256 == "b2" * 32
    assert store.record(photo).tags == ["draft", "Grandma"]

    contents.mark_missing(store, [gone])
    assert contents.move_path(store, other, gone)
    assert store.record(gone).tags == []
