"""What records read of judgements (the labels a person rejected or confirmed,
store/judgements.py writes them): plain SQL, no SQLAlchemy, run by both record
builders (recordsql's dicts and recordjson's text) through `run`.

A record whose content has judgements (its row says so: recordsql's `judged`
column, one index step) gets them with one query per CHUNK such contents. Its
rejected labels leave `labels` and are listed in `rejected`; its confirmed ones
say `"confirmed": true`. A rejected label also hides an imported tag of its own
name: a keyword the photo carried ("tabby", from another program) is the same
claim as the label the person took back. A tag a person gave is never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable

from labelsd.store.sqlparts import CHUNK, Run, as_utc, in_list

REJECTED, CONFIRMED = "rejected", "confirmed"

JUDGEMENTS_SQL = ("SELECT j.sha256, j.class_index, j.wnid, j.label, j.verdict, j.source, "
                  "j.judged_at, EXISTS (SELECT 1 FROM tags t WHERE t.sha256 = j.sha256 "
                  "AND t.tag_key = lower(j.label) AND t.imported) AS hides_tag "
                  "FROM judgements j WHERE j.sha256 IN ({}) ORDER BY j.sha256, j.class_index")
# (Labels are ASCII: lower() is their tag key, the same on SQLite and PostgreSQL.)

# A SQLite library from before migration 8 (its service not restarted since an
# upgrade) has no judgements table: the read-only reader stands an empty one in
# for it in its own connection's temp schema, so the queries answer as before.
STAND_IN_SQL = ("CREATE TEMP TABLE judgements (sha256 VARCHAR(64) NOT NULL, class_index INTEGER "
                "NOT NULL, wnid VARCHAR(16) NOT NULL, label TEXT NOT NULL, verdict VARCHAR(16) "
                "NOT NULL, source VARCHAR(8) NOT NULL, judged_at DATETIME NOT NULL, "
                "PRIMARY KEY (sha256, class_index))")


def hidden_tag_sql(t: str) -> str:
    """Whether the tag row `t` is hidden: imported, and named after a label rejected
    on its content (one step down the content's judgements)."""
    return (f"({t}.imported AND EXISTS (SELECT 1 FROM judgements {t}_j WHERE {t}_j.sha256 = "
            f"{t}.sha256 AND {t}_j.verdict = 'rejected' AND lower({t}_j.label) = {t}.tag_key))")


# The hidden tag rows, from the rejections (few) to their tags (one step each), with
# the paths of their content: what `labels tags` and `labels stats` count them off by.
HIDDEN_TAGS_SQL = ("SELECT t.sha256, t.tag_key, (SELECT count(*) FROM paths p WHERE p.sha256 = "
                   "t.sha256) AS images FROM judgements j JOIN tags t ON t.sha256 = j.sha256 "
                   "AND t.tag_key = lower(j.label) WHERE j.verdict = 'rejected' AND t.imported")
# The label a rejection took from the first place (rank 1), the first label left
# after it (NULL: none), and the present paths of its content: what `labels stats`
# moves each such photo's count by.
FIRST_LABELS_MOVED_SQL = (
    "SELECT r.label, (SELECT n.label FROM predictions n WHERE n.sha256 = r.sha256 "
    "AND n.rank > 1 AND NOT EXISTS (SELECT 1 FROM judgements x WHERE x.sha256 = n.sha256 "
    "AND x.class_index = n.class_index AND x.verdict = 'rejected') ORDER BY n.rank LIMIT 1), "
    "(SELECT count(*) FROM paths p WHERE p.sha256 = r.sha256 AND NOT p.missing) "
    "FROM judgements j JOIN predictions r ON r.sha256 = j.sha256 AND r.rank = 1 "
    "AND r.class_index = j.class_index WHERE j.verdict = 'rejected'")


def judgements_of(run: Run, shas: Iterable[str]) -> dict[str, list[tuple]]:
    """The judgements of these contents (those with none left out), each a row
    (class_index, wnid, label, verdict, source, judged_at, hides_tag) in class
    order: one query per CHUNK contents."""
    wanted = sorted(shas)
    found: dict[str, list[tuple]] = {}
    for start in range(0, len(wanted), CHUNK):
        params: dict = {}
        for row in run(JUDGEMENTS_SQL.format(in_list("j", wanted[start:start + CHUNK], params)),
                       params):
            found.setdefault(row[0], []).append(tuple(row[1:]))
    return found


class Judged:
    """One content's judgements as the record builders use them."""

    __slots__ = ("confirmed", "hidden_tags", "rejected", "rejected_classes")

    def __init__(self, judgements: list[tuple]):
        self.confirmed: set[int] = set()
        self.rejected_classes: set[int] = set()
        self.rejected: list[dict] = []  # as records list them
        self.hidden_tags: set[str] = set()  # keys of the imported tags rejected labels hide
        for index, wnid, label, verdict, source, when, hides_tag in judgements:
            if verdict == CONFIRMED:
                self.confirmed.add(index)
                continue
            self.rejected_classes.add(index)
            self.rejected.append({"label": label, "wnid": wnid, "class_index": index,
                                  "source": source, "rejected_at": as_utc(when).isoformat()})
            if hides_tag:
                self.hidden_tags.add(label.lower())

    def tags(self, tags: list[str]) -> list[str]:
        """The tags a record shows (those a rejected label hides left out)."""
        hidden = self.hidden_tags
        return [t for t in tags if t.casefold() not in hidden] if hidden else tags


def apply_judgements(records: list[dict], judgements: list[tuple]) -> None:
    """Records (dicts, their tags attached) of one judged content, changed in place:
    rejected labels out (listed in `rejected`), confirmed ones marked, hidden tags out."""
    judged = Judged(judgements)
    for rec in records:
        rec["labels"] = [{**p, "confirmed": True} if p["class_index"] in judged.confirmed else p
                         for p in rec["labels"] if p["class_index"] not in judged.rejected_classes]
        rec["rejected"] = [dict(r) for r in judged.rejected]
        rec["tags"] = judged.tags(rec["tags"])


__all__ = ["CONFIRMED", "FIRST_LABELS_MOVED_SQL", "HIDDEN_TAGS_SQL", "JUDGEMENTS_SQL", "REJECTED",
           "STAND_IN_SQL",
           "Judged", "apply_judgements", "hidden_tag_sql", "judgements_of"]
