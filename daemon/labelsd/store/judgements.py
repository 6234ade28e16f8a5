"""Judgements: what a person said of a content's labels, the one owner of their writes.

A label can be *rejected* (it is wrong: no reader shows it or finds the photo by
it, and relabelling never brings it back) or *confirmed* (it is right: it sorts
first in search and is kept through relabelling). A judgement belongs to the
content (its SHA-256), like a tag: it follows renames and holds for every copy,
and a changed file is new content that starts clean. It is stored in its own
table (migration 8: `judgements`, one row per content and class, with where it
was given and when), never as a mark on the predictions, which the writer
replaces whenever it relabels a content.

The API, the same for the CLI (`labels reject ...`, source "cli"), the web
interface (source "web") and sidecars (source "xmp"):

    reject(store, sha256s, class_index, source="cli", *, strict=True, names=None) -> list[str]
    unreject(store, sha256s, class_index, *, strict=True, names=None) -> list[str]
    confirm(store, sha256s, class_index, source="cli", *, strict=True, names=None) -> list[str]
    unconfirm(store, sha256s, class_index, *, strict=True, names=None) -> list[str]
    judgements_of(store, sha256s) -> dict[str, list[Judgement]]

Each change is one transaction and returns the contents it changed. Reject and
confirm are each other's undo: rejecting a confirmed label replaces the
confirmation, confirming a rejected one brings it back, confirmed. With
`strict` (the default) every content must be fit for the change or nothing is
changed: a named error (labelsd.errors) says which and why: `LabelNotCarried`
(reject or confirm a label the content's top 3 lacks), `AlreadyJudged`
(rejecting twice, confirming twice), `NotJudged` (unreject what was never
rejected, unconfirm what was never confirmed), `NotTracked` (no such content).
With `strict=False` (a search's photos: `--search`) the unfit are skipped; a
set makes those contents strict and skips the rest's unfit (one transaction for
`labels reject PATH... --search QUERY`). `names` (sha256 -> how a person knows
it, e.g. its path) words the errors.

On PostgreSQL every change first locks the contents it judges (in content
order), as the writer locks the contents it relabels (store/relabel.py's
`keep_confirmed`): a
confirmation and a relabelling of one content never interleave. A rejection
needs no lock to be honoured: readers leave rejected labels out whatever the
predictions say, so a node writing a batch cannot bring one back.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labelsd.errors import AlreadyJudged, LabelNotCarried, NotJudged, NotTracked
from labelsd.store.engine import CHUNK, Store, dialect_insert, write_rows
from labelsd.store.judgedsql import CONFIRMED, REJECTED
from labelsd.store.judgedsql import judgements_of as judgement_rows
from labelsd.store.schema import Content, Prediction, utcnow
from labelsd.store.schema import Judgement as JudgementRow
from labelsd.store.sqlparts import as_utc

log = logging.getLogger(__name__)

SOURCES = ("cli", "xmp", "web")

# action -> (the verdict it sets, or None to take one back; the verdicts it may start from)
_ACTIONS = {
    "reject": (REJECTED, (None, CONFIRMED)),
    "confirm": (CONFIRMED, (None, REJECTED)),
    "unreject": (None, (REJECTED,)),
    "unconfirm": (None, (CONFIRMED,)),
}


@dataclass(frozen=True)
class Judgement:
    """One judgement of one label of a content."""

    sha256: str
    class_index: int
    wnid: str
    label: str
    verdict: str  # "rejected" | "confirmed"
    source: str  # "cli" | "xmp" | "web"
    judged_at: datetime


Strict = bool | Collection[str]  # True: every content must fit; False: none; else: these


def reject(store: Store, sha256s: Iterable[str], class_index: int, source: str = "cli", *,
           strict: Strict = True, names: Mapping[str, str] | None = None) -> list[str]:
    """Reject the label `class_index` on these contents; returns those changed."""
    return _change(store, "reject", sha256s, class_index, source, strict, names)


def unreject(store: Store, sha256s: Iterable[str], class_index: int, *, strict: Strict = True,
             names: Mapping[str, str] | None = None) -> list[str]:
    """Take rejections back (whatever their source); returns the contents changed."""
    return _change(store, "unreject", sha256s, class_index, "cli", strict, names)


def confirm(store: Store, sha256s: Iterable[str], class_index: int, source: str = "cli", *,
            strict: Strict = True, names: Mapping[str, str] | None = None) -> list[str]:
    """Confirm the label `class_index` on these contents; returns those changed."""
    return _change(store, "confirm", sha256s, class_index, source, strict, names)


def unconfirm(store: Store, sha256s: Iterable[str], class_index: int, *, strict: Strict = True,
              names: Mapping[str, str] | None = None) -> list[str]:
    """Take confirmations back; returns the contents changed."""
    return _change(store, "unconfirm", sha256s, class_index, "cli", strict, names)


def judgements_of(store: Store, sha256s: Iterable[str]) -> dict[str, list[Judgement]]:
    """Every judgement of these contents (those with none left out), in class order."""
    with store.rows() as run:
        found = judgement_rows(run, set(sha256s))
    return {sha: [Judgement(sha, *row[:5], as_utc(row[5])) for row in rows]
            for sha, rows in found.items()}


def _change(store: Store, action: str, sha256s: Iterable[str], class_index: int, source: str,
            strict: Strict, names: Mapping[str, str] | None) -> list[str]:
    if source not in SOURCES:
        raise ValueError(f"unknown judgement source {source!r}; one of {', '.join(SOURCES)}")
    verdict, starts = _ACTIONS[action]
    wanted = sorted(set(sha256s))
    names = names or {}
    with store.write() as session:
        lock_contents(session, wanted)
        known = {row[0] for row in _existing(session, select(Content.sha256), Content.sha256, wanted)}
        # (a content's labels by its key, the class compared here: asked for by class,
        # SQLite may walk every label of that class once per chunk)
        carried = {sha: (wnid, label) for sha, index, wnid, label in _existing(
            session, select(Prediction.sha256, Prediction.class_index, Prediction.wnid,
                            Prediction.label), Prediction.sha256, wanted) if index == class_index}
        current = {sha: (found, wnid, label) for sha, found, wnid, label in _existing(
            session, select(JudgementRow.sha256, JudgementRow.verdict, JudgementRow.wnid, JudgementRow.label)
            .where(JudgementRow.class_index == class_index), JudgementRow.sha256, wanted)}
        fit = []
        for sha in wanted:
            problem = _problem(action, sha, known, carried, current, starts)
            if problem is None:
                fit.append(sha)
            elif strict is True or (strict is not False and sha in strict):
                label = (current[sha][2] if sha in current else None) or session.scalar(
                    select(Prediction.label).where(Prediction.class_index == class_index).limit(1))
                raise problem(_message(problem, action, names.get(sha, sha),
                                       label or f"class {class_index}", current.get(sha)))
        if verdict is None:
            for start in range(0, len(fit), CHUNK):
                session.execute(delete(JudgementRow).where(
                    JudgementRow.class_index == class_index,
                    JudgementRow.sha256.in_(fit[start:start + CHUNK])))
        elif fit:
            now = utcnow()
            ins = dialect_insert(session, JudgementRow.__table__)
            write_rows(session, ins.on_conflict_do_update(
                index_elements=["sha256", "class_index"],
                set_={name: ins.excluded[name] for name in ("verdict", "source", "judged_at")}),
                [{"sha256": sha, "class_index": class_index,
                  "wnid": (carried.get(sha) or current[sha][1:])[0],
                  "label": (carried.get(sha) or current[sha][1:])[1],
                  "verdict": verdict, "source": source, "judged_at": now} for sha in fit])
    if fit:
        log.info("%s class %d on %d content(s)", action, class_index, len(fit))
    return fit


def _problem(action: str, sha: str, known, carried, current, starts):
    """The error class that keeps `sha` from this change, or None when it is fit."""
    if sha not in known:
        return NotTracked
    verdict = current[sha][0] if sha in current else None
    if verdict not in starts:
        return AlreadyJudged if action in ("reject", "confirm") else NotJudged
    # A label must be among the top 3 to be judged; a confirmed one always is (kept
    # through relabelling), a rejected one may have left it (confirm then refuses).
    if action in ("reject", "confirm") and sha not in carried and verdict != CONFIRMED:
        return LabelNotCarried
    return None


def _message(problem, action: str, name: str, label: str, current) -> str:
    if problem is NotTracked:
        return f"{name}: no such content in the library; nothing was changed"
    if problem is LabelNotCarried:
        return (f"{name} does not carry the label {label} (its top 3 lacks it); "
                "nothing was changed")
    if problem is AlreadyJudged:
        return f"{name}: {label} is already {current[0]}; nothing was changed"
    return (f"{name}: {label} was never {'rejected' if action == 'unreject' else 'confirmed'}; "
            "nothing was changed")


def _existing(session: Session, stmt, key, wanted: list[str]) -> list:
    """Rows of `stmt` whose `key` is one of `wanted`, a chunk at a time."""
    rows: list = []
    for start in range(0, len(wanted), CHUNK):
        rows += session.execute(stmt.where(key.in_(wanted[start:start + CHUNK]))).all()
    return rows


def lock_contents(session: Session, sha256s: list[str]) -> None:
    """On PostgreSQL, lock these contents' rows in content order until the
    transaction ends (SQLite has one writer at a time already)."""
    if session.bind.dialect.name != "postgresql" or not sha256s:
        return
    ordered = sorted(sha256s)
    for start in range(0, len(ordered), CHUNK):
        session.execute(select(Content.sha256).where(
            Content.sha256.in_(ordered[start:start + CHUNK]))
            .order_by(Content.sha256).with_for_update())


# ---- inside the writer's and the importers' transactions -----------------------------


def import_rejections(session: Session, found: Mapping[str, Iterable[tuple[int, str, str]]],
                      source: str = "xmp", now: datetime | None = None) -> int:
    """Store rejections of labels found elsewhere (a sidecar's suppressed keywords):
    {sha256: [(class_index, wnid, label)]}. Never replaces a judgement a person gave
    in labelsd (a confirmation stays). Returns how many were new."""
    rows = [{"sha256": sha, "class_index": index, "wnid": wnid, "label": label,
             "verdict": REJECTED, "source": source, "judged_at": now or utcnow()}
            for sha, labels in found.items() for index, wnid, label in labels]
    if not rows:
        return 0
    rows = list({(r["sha256"], r["class_index"]): r for r in rows}.values())
    before = {tuple(k) for k in _existing(session, select(JudgementRow.sha256, JudgementRow.class_index),
                                          JudgementRow.sha256, sorted(found))}
    write_rows(session, dialect_insert(session, JudgementRow.__table__).on_conflict_do_nothing(
        index_elements=["sha256", "class_index"]), rows)
    return sum((r["sha256"], r["class_index"]) not in before for r in rows)


def labels_named(words: Iterable[str], labels: Iterable) -> list[tuple[int, str, str]]:
    """(class_index, wnid, label) of the `labels` (Predictions, or anything with
    those three) that these words name, compared case-insensitively: which labels
    a sidecar's suppressed keywords reject."""
    wanted = {w.strip().casefold() for w in words}
    return [(p.class_index, p.wnid, p.label) for p in labels if p.label.casefold() in wanted]


def import_sidecar_rejections(store: Store, found: Mapping[str, Iterable[tuple[int, str, str]]]
                              ) -> int:
    """`import_rejections` from sidecars, in a transaction of its own (`labels xmp write`)."""
    found = {sha: list(labels) for sha, labels in found.items() if labels}
    if not found:
        return 0
    with store.write() as session:
        lock_contents(session, list(found))
        return import_rejections(session, found, "xmp")


__all__ = ["CONFIRMED", "REJECTED", "SOURCES", "Judgement", "confirm", "import_rejections",
           "import_sidecar_rejections", "judgements_of", "labels_named", "lock_contents",
           "reject", "unconfirm", "unreject"]
