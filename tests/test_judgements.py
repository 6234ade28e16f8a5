"""Judgements (store/judgements.py): rejecting and confirming a content's labels,
on SQLite and PostgreSQL: what each change does, what it refuses (nothing changed),
and relabelling, which never brings a rejected label back and keeps a confirmed one."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select, text

from labelsd.errors import AlreadyJudged, LabelNotCarried, NotJudged, NotTracked
from labelsd.records import Prediction
from labelsd.serve import query
from labelsd.serve.reader import open_reader
from labelsd.store import judgements, migrations
from labelsd.store.engine import open_store
from labelsd.store.schema import Judgement as JudgementRow
from test_relabel import INCEPTION, LITE, MOPED, TABBY, label
from test_search import add_images

TABBY_CLASS, TIGER_CAT, EGYPTIAN_CAT, MOPED_CLASS = 281, 282, 285, 665


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def cats(store, tmp_path, monkeypatch):
    """Three photos, each its own content: two with tabby, one without."""
    monkeypatch.chdir(tmp_path)
    return add_images(store, {
        "a.jpg": [(281, 0.9), (282, 0.05), (285, 0.02)],
        "b.jpg": [(283, 0.7), (281, 0.2), (332, 0.05)],
        "c.jpg": [(207, 0.8), (208, 0.1), (222, 0.02)],
    })


def rows(store) -> list[tuple]:
    with store.read() as session:
        return sorted(session.execute(select(
            JudgementRow.sha256, JudgementRow.class_index, JudgementRow.verdict,
            JudgementRow.source, JudgementRow.label)).all())


def labels_of(store, path) -> list[tuple[str, bool]]:
    return [(p.label, p.confirmed) for p in store.record(path).labels]


def test_reject_hides_the_label_and_lists_it_confirm_marks_it(store, cats):
    a, b = sha("a.jpg"), sha("b.jpg")
    assert judgements.reject(store, [a, b], TABBY_CLASS) == sorted([a, b])
    assert labels_of(store, cats["a.jpg"]) == [("tiger cat", False), ("Egyptian cat", False)]
    rec = store.record(cats["b.jpg"])
    assert [p.label for p in rec.labels] == ["Persian cat", "Angora"]
    assert [(r.label, r.class_index, r.source) for r in rec.rejected] == [("tabby", 281, "cli")]
    assert rec.to_dict()["rejected"][0]["rejected_at"].endswith("+00:00")

    assert judgements.confirm(store, [a], TIGER_CAT, "web") == [a]
    assert labels_of(store, cats["a.jpg"]) == [("tiger cat", True), ("Egyptian cat", False)]
    found = judgements.judgements_of(store, [a, b, sha("c.jpg")])
    assert sorted(found) == sorted([a, b])
    assert [(j.class_index, j.verdict, j.source, j.label) for j in found[a]] == [
        (281, "rejected", "cli", "tabby"), (282, "confirmed", "web", "tiger cat")]
    assert found[a][0].judged_at.tzinfo is not None


def test_reject_and_confirm_undo_each_other_and_the_un_commands_take_back(store, cats):
    a = sha("a.jpg")
    judgements.reject(store, [a], TABBY_CLASS)
    judgements.confirm(store, [a], TABBY_CLASS)  # brings it back, confirmed
    assert labels_of(store, cats["a.jpg"])[0] == ("tabby", True)
    judgements.reject(store, [a], TABBY_CLASS, "web")  # replaces the confirmation
    assert rows(store) == [(a, 281, "rejected", "web", "tabby")]
    judgements.unreject(store, [a], TABBY_CLASS)
    assert rows(store) == [] and labels_of(store, cats["a.jpg"])[0] == ("tabby", False)
    judgements.confirm(store, [a], TABBY_CLASS)
    judgements.unconfirm(store, [a], TABBY_CLASS)
    assert rows(store) == []


@pytest.mark.parametrize(("setup", "change", "error", "words"), [
    # a label the photo does not carry (c.jpg is a retriever)
    ([], ("reject", "c.jpg", TABBY_CLASS), LabelNotCarried, "does not carry the label"),
    ([], ("confirm", "c.jpg", TABBY_CLASS), LabelNotCarried, "does not carry the label"),
    # twice
    ([("reject", "a.jpg", TABBY_CLASS)], ("reject", "a.jpg", TABBY_CLASS), AlreadyJudged,
     "tabby is already rejected"),
    ([("confirm", "a.jpg", TABBY_CLASS)], ("confirm", "a.jpg", TABBY_CLASS), AlreadyJudged,
     "tabby is already confirmed"),
    # taking back what was never given
    ([], ("unreject", "a.jpg", TABBY_CLASS), NotJudged, "was never rejected"),
    ([("confirm", "a.jpg", TABBY_CLASS)], ("unreject", "a.jpg", TABBY_CLASS), NotJudged,
     "was never rejected"),
    ([("reject", "a.jpg", TABBY_CLASS)], ("unconfirm", "a.jpg", TABBY_CLASS), NotJudged,
     "was never confirmed"),
])
def test_bad_changes_are_refused_naming_the_photo_and_change_nothing(store, cats, setup, change,
                                                                     error, words):
    for action, name, index in setup:
        getattr(judgements, action)(store, [sha(name)], index)
    before = rows(store)
    action, name, index = change
    # with a photo the change would fit: all or nothing
    targets = [sha("b.jpg"), sha(name)] if action in ("reject", "confirm") else [sha(name)]
    with pytest.raises(error, match=words) as caught:
        getattr(judgements, action)(store, targets, index, names={sha(name): cats[name]})
    assert str(caught.value).startswith(cats[name]) and "nothing was changed" in str(caught.value)
    assert rows(store) == before


def test_an_unknown_content_is_not_tracked(store, cats):
    with pytest.raises(NotTracked, match="no such content"):
        judgements.reject(store, ["f" * 64], TABBY_CLASS)
    with pytest.raises(ValueError, match="source"):
        judgements.reject(store, [sha("a.jpg")], TABBY_CLASS, "email")
    assert rows(store) == []


def test_not_strict_skips_what_does_not_fit(store, cats):
    a, b, c = sha("a.jpg"), sha("b.jpg"), sha("c.jpg")
    judgements.reject(store, [a], TABBY_CLASS)
    assert judgements.reject(store, [a, b, c], TABBY_CLASS, strict=False) == [b]
    assert judgements.unreject(store, [a, c], TABBY_CLASS, strict=False) == [a]
    assert [r[0] for r in rows(store)] == [b]
    # a set: those contents must fit, the others' unfit are skipped (one transaction)
    assert judgements.reject(store, [a, b, c], TABBY_CLASS, strict={a}) == [a]
    with pytest.raises(LabelNotCarried):
        judgements.confirm(store, [a, b, c], TIGER_CAT, strict={c})
    assert [r[0] for r in rows(store)] == sorted([a, b])


def test_a_rejection_belongs_to_the_content_every_copy_and_a_rename(store, tmp_path, monkeypatch):
    from labelsd.store import contents

    monkeypatch.chdir(tmp_path)
    paths = add_images(store, {"one.jpg": [(281, 0.9), (282, 0.05), (285, 0.02)],
                               "copy.jpg": [(281, 0.9), (282, 0.05), (285, 0.02)]},
                       sha_of={"one.jpg": "1" * 64, "copy.jpg": "1" * 64})
    judgements.reject(store, ["1" * 64], TABBY_CLASS)
    assert contents.move_path(store, paths["one.jpg"], str(tmp_path / "renamed.jpg"))
    for path in (paths["copy.jpg"], str(tmp_path / "renamed.jpg")):
        assert "tabby" not in [p.label for p in store.record(path).labels]


# ---- relabelling --------------------------------------------------------------------


def test_relabelling_never_brings_a_rejected_label_back(store, tmp_path):
    cat = str(tmp_path / "cat.jpg")
    label(store, cat, "a" * 64, INCEPTION, TABBY)
    judgements.reject(store, ["a" * 64], TABBY_CLASS)
    label(store, cat, "a" * 64, LITE, MOPED)  # a model switch
    label(store, cat, "a" * 64, INCEPTION, TABBY)  # and back: the model gives tabby again
    assert [p.label for p in store.record(cat).labels] == ["tiger cat", "Egyptian cat"]
    label(store, cat, "a" * 64, "InceptionV3/int8", TABBY)  # a precision change (same family)
    label(store, cat, "a" * 64, INCEPTION, TABBY)  # the file saved again, same bytes
    rec = store.record(cat)
    assert [p.label for p in rec.labels] == ["tiger cat", "Egyptian cat"]
    assert [r.label for r in rec.rejected] == ["tabby"]


def test_a_changed_file_is_new_content_and_starts_clean(store, tmp_path):
    cat = str(tmp_path / "cat.jpg")
    label(store, cat, "a" * 64, INCEPTION, TABBY)
    judgements.reject(store, ["a" * 64], TABBY_CLASS)
    label(store, cat, "b" * 64, INCEPTION, TABBY)  # edited: other bytes
    rec = store.record(cat)
    assert [p.label for p in rec.labels][0] == "tabby" and rec.rejected == []


def test_a_confirmed_label_is_kept_through_relabelling(store, tmp_path):
    cat = str(tmp_path / "cat.jpg")
    label(store, cat, "a" * 64, INCEPTION, TABBY)
    judgements.confirm(store, ["a" * 64], TIGER_CAT)
    judgements.reject(store, ["a" * 64], EGYPTIAN_CAT)
    # the new model's top 3 holds neither: tiger cat takes the lowest new label's
    # place with the score it had (0.2), ranked by score
    label(store, cat, "a" * 64, LITE, MOPED)
    assert [(p.rank, p.label, p.score, p.confirmed) for p in store.record(cat).labels] == [
        (1, "moped", 0.5, False), (2, "motor scooter", 0.3, False), (3, "tiger cat", 0.2, True)]
    # a new top 3 with the rejected label in it: the confirmed one takes its place first
    label(store, cat, "a" * 64, INCEPTION, [Prediction(1, "moped", "n03785016", 665, 0.6),
                                           Prediction(2, "Egyptian cat", "n02124075", 285, 0.3),
                                           Prediction(3, "tabby", "n02123045", 281, 0.05)])
    rec = store.record(cat)
    assert [(p.rank, p.label, p.confirmed) for p in rec.labels] == [
        (1, "moped", False), (2, "tiger cat", True), (3, "tabby", False)]
    with store.read() as session:
        stored = session.execute(text("SELECT model FROM predictions WHERE class_index = 282")).scalar()
    assert stored == INCEPTION  # the model that gave its score
    # where the new model gives it, its own score and rank stand
    label(store, cat, "a" * 64, LITE, TABBY)
    assert [(p.label, p.score, p.confirmed) for p in store.record(cat).labels] == [
        ("tabby", 0.7, False), ("tiger cat", 0.2, True)]


def test_three_confirmed_labels_fill_every_place(store, tmp_path):
    cat = str(tmp_path / "cat.jpg")
    label(store, cat, "a" * 64, INCEPTION, TABBY)
    for index in (TABBY_CLASS, TIGER_CAT, EGYPTIAN_CAT):
        judgements.confirm(store, ["a" * 64], index)
    label(store, cat, "a" * 64, LITE, MOPED)
    assert [p.label for p in store.record(cat).labels] == ["tabby", "tiger cat", "Egyptian cat"]


# ---- the table ----------------------------------------------------------------------


def test_migration_8_adds_the_table_to_a_schema_7_library(tmp_path):
    from sqlalchemy import create_engine, inspect

    db = tmp_path / "seven.db"
    engine = create_engine(f"sqlite:///{db}")
    migrations.migrate(engine, target=7)
    engine.dispose()
    with open_store(str(db), migrate=False) as old:
        label(old, str(tmp_path / "cat.jpg"), "a" * 64, INCEPTION, TABBY)
    # `labels` upgraded before the service restarted: its read-only reader still answers
    reader = open_reader(str(db))
    try:
        assert [r.path for r in query.search(reader, "cat")] == [str(tmp_path / "cat.jpg")]
        assert query.stats(reader).top_labels == [("tabby", 1)] and query.tag_counts(reader) == []
    finally:
        reader.close()
    with open_store(str(db)) as store:
        assert "judgements" in inspect(store.engine).get_table_names()
        with store.read() as session:
            ddl = session.execute(text(
                "SELECT sql FROM sqlite_master WHERE name = 'judgements'")).scalar_one()
        assert "WITHOUT ROWID" in ddl
        judgements.reject(store, ["a" * 64], TABBY_CLASS)
        with store.write() as session:  # a content's judgements go with it
            session.execute(text("DELETE FROM paths"))
            session.execute(text("DELETE FROM contents"))
        with store.read() as session:
            assert session.scalar(select(func.count()).select_from(JudgementRow)) == 0
