"""`labels reject | unreject | confirm | unconfirm PATH... -l LABEL [--search QUERY]`:
the words a person types turned into what store/judgements.py takes.

LABEL is a class label as `labels show` prints it, compared as search compares
names (case, spaces, underscores and hyphens do not matter); a synonym WordNet
gives one class only (`tabby cat`) names it too. A word that names no class, or
several (`cat`, `crane`), is an error that says which classes were near. PATHs
must be tracked and read; `--search QUERY` adds every photo that search finds.
Then one transaction changes them all or nothing: a named PATH that cannot take
the change (it lacks the label, it is already so judged, it never was) stops it
(store/judgements.py's errors, naming the path). A photo the search found that
cannot take it is skipped: the search finds photos by other labels too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from labelsd.errors import LabelsError, NotTracked, UnknownLabel
from labelsd.model.taxonomy import ImageNetClass, class_by_index, class_by_label, select_classes, suggest_labels
from labelsd.paths import canonical_path
from labelsd.serve.query import search_hits
from labelsd.store import judgements
from labelsd.store.schema import TrackedPath
from labelsd.store.sqlparts import CHUNK

ACTIONS = ("reject", "unreject", "confirm", "unconfirm")
# what each does to a label, in the words the CLI prints
DONE = {"reject": "rejected", "unreject": "no longer rejected", "confirm": "confirmed",
        "unconfirm": "no longer confirmed"}


@dataclass
class Judged:
    """What one judging command did: the class, the paths whose content changed
    (named ones first, in the order given), and how many found paths were skipped."""

    label: str
    class_index: int
    paths: list[str] = field(default_factory=list)
    skipped: int = 0


def class_named(text: str) -> ImageNetClass:
    """The one class `text` names (see the module docstring); UnknownLabel otherwise."""
    found = class_by_label(text)
    if found is not None:
        return found
    synonyms = select_classes(text, exact=True)
    if len(synonyms) == 1:
        return class_by_index(next(iter(synonyms)))
    meant = sorted(synonyms or select_classes(text))
    if meant:
        shown = ", ".join(class_by_index(i).label for i in meant[:5]) + (", ..." if len(meant) > 5 else "")
        raise UnknownLabel(f"{text.strip()!r} is not one label but a word for {len(meant)} classes "
                           f"({shown}); give one label as `labels show` prints it")
    near = suggest_labels(text)
    raise UnknownLabel(f"no label is called {text.strip()!r}"
                       + (f"; did you mean {', '.join(near)}?" if near else "")
                       + " (labels are ImageNet class names as `labels show` prints them)")


def judge(store, action: str, label: str, paths: Iterable[str] = (), *,
          search: str | None = None, min_score: float | None = None, source: str = "cli") -> Judged:
    """Do `action` (reject, unreject, confirm, unconfirm) for the label `label` on
    the contents of `paths` and of what `search` finds (at the score floor
    `min_score`, as `labels search` finds it: the caller's search_min_score). Named errors (exit 1)
    for an unknown label, an untracked path, and what judgements refuse."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    cls = class_named(label)
    named = list(dict.fromkeys(canonical_path(p) for p in paths))
    found: list[str] = []
    if search is not None:
        found = [h.path for h in search_hits(store, search, min_score=min_score)]
        if not found:
            raise LabelsError(f"`labels search {search}` finds no photo; nothing was changed")
    named_set = set(named)
    found = [p for p in dict.fromkeys(found) if p not in named_set]
    shas = _contents(store, named + found, strict=named_set)
    extra = {} if action in ("unreject", "unconfirm") else {"source": source}
    changed = set(getattr(judgements, action)(  # one transaction: the named ones must fit
        store, [shas[p] for p in named + found if p in shas], cls.index,
        strict={shas[p] for p in named}, names={shas[p]: p for p in named}, **extra))
    result = Judged(cls.label, cls.index, [p for p in named + found if shas.get(p) in changed])
    result.skipped = sum(1 for p in found if shas.get(p) not in changed)
    if search is not None and not named and not result.paths:
        raise LabelsError(f"none of the {len(found)} photo(s) `labels search {search}` finds "
                          f"can be {DONE[action]} for {cls.label} (each lacks it or is so "
                          "already); nothing was changed")
    return result


def _contents(store, paths: list[str], strict: set[str]) -> dict[str, str]:
    """{path: its content} for these stored paths; NotTracked for one in `strict`
    that is not tracked or not read yet (a path that is not there: no such file)."""
    known: dict[str, str | None] = {}
    with store.read() as session:
        for start in range(0, len(paths), CHUNK):
            known.update(session.execute(select(TrackedPath.path, TrackedPath.sha256).where(
                TrackedPath.path.in_(paths[start:start + CHUNK]))).all())
    for path in paths:
        if path not in strict or known.get(path):
            continue
        if path in known:
            raise NotTracked(f"{path} has not been read yet; try again once `labels show` "
                             "says done; nothing was changed")
        if not os.path.lexists(path):
            raise NotTracked(f"{path}: no such file; nothing was changed")
        raise NotTracked(f"{path} is not tracked by labelsd; nothing was changed")
    return {path: sha for path, sha in known.items() if sha}


__all__ = ["ACTIONS", "DONE", "Judged", "class_named", "judge"]
