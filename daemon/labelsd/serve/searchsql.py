"""The SQL of a search: which paths a query's classes and tags find, best first, at
a score floor, with a person's judgements counted (a rejected label finds nothing, a
confirmed one ranks first and no floor hides it), narrowed by tags and EXIF
(`Narrowing`), and how many label matches the floor hid. `serve.query.find` runs
these over a `Reader`'s `run`; nothing here knows the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from labelsd.serve.reader import in_list
from labelsd.serve.tagmatch import label_keys, tag_key
from labelsd.store.judgedsql import hidden_tag_sql


@dataclass(frozen=True)
class Narrowing:
    """What narrows a search besides its words: tags it must carry, whether
    missing files count, and the EXIF filters (`--since/--until/--camera`)."""

    tags: tuple[str, ...] = ()
    include_missing: bool = False
    since: str | None = None
    until: str | None = None
    camera: str | None = None

    def sql(self, params: dict) -> str:
        """` AND ...` conditions on the path `p` (its content as `p.sha256`)."""
        sql = ""
        for i, key in enumerate(dict.fromkeys(tag_key(t) for t in self.tags if t.strip())):
            params[f"tk{i}"] = key
            hidden = f" AND NOT {hidden_tag_sql(f't{i}')}" if key in label_keys() else ""
            sql += (f" AND EXISTS (SELECT 1 FROM tags t{i} WHERE t{i}.sha256 = p.sha256"
                    f" AND t{i}.tag_key = :tk{i}{hidden})")
        photo = photo_sql(params, self.since, self.until, self.camera)
        if photo:
            sql += f" AND p.sha256 IN (SELECT m.sha256 FROM contents m WHERE {photo})"
        return sql if self.include_missing else sql + " AND NOT p.missing"


def taken_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """`--since 2024-06 --until 2024-09` as bounds on `contents.taken_at` (ISO text):
    since the first moment of `since`, up to the last moment of `until` (a
    year, a month or a day: YYYY, YYYY-MM, YYYY-MM-DD). ValueError on other text."""
    return (_period(since)[0] if since else None), (_period(until)[1] if until else None)


def _period(text: str) -> tuple[str, str]:
    """[start, end) of a year, month or day, as ISO text."""
    from datetime import datetime, timedelta

    text = text.strip()
    for fmt, unit in (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year")):
        try:
            start = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if unit == "day":
            end = start + timedelta(days=1)
        elif unit == "month":
            end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
        return start.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")
    raise ValueError(f"{text!r} is not a date: give YYYY, YYYY-MM or YYYY-MM-DD")


def photo_sql(params: dict, since: str | None = None, until: str | None = None,
              camera: str | None = None) -> str:
    """Conditions on a content `m` for the EXIF filters ("" when none is given).
    The camera matches any part of make and model, case-insensitively (bound as
    a LIKE with its wildcards escaped, the same on SQLite and PostgreSQL)."""
    start, end = taken_window(since, until)
    conditions = []
    if start is not None:
        params["taken_from"] = start
        conditions.append("m.taken_at >= :taken_from")
    if end is not None:
        params["taken_to"] = end
        conditions.append("m.taken_at < :taken_to")
    if camera and camera.strip():
        escaped = "".join("/" + ch if ch in "/%_" else ch for ch in camera.strip().lower())
        params["camera"] = f"%{escaped}%"
        conditions.append("lower(m.camera) LIKE :camera ESCAPE '/'")
    return " AND ".join(conditions)


def best_sql(classes: frozenset[int], params: dict, min_score: float) -> str:
    """(sha256, best, confirmed): each content whose labels match at `min_score` or
    more, with its best matching score, and whether a matching label is confirmed
    (then its best confirmed score, whatever the floor: a person's word is no guess).
    The contents with a judgement on a matching class (few: 1% of a library's photos
    judged adds 3% to `cat`'s statement) are worked out apart, their rejected labels
    left out; the rest come from the (class, score, content) index alone, as before
    judgements."""
    cls = in_list("c", sorted(classes), params)
    params["min_score"] = min_score
    judged = f"SELECT sha256 FROM judgements WHERE class_index IN ({cls})"
    confirmed = "CASE WHEN j.verdict = 'confirmed' THEN 1 ELSE 0 END"
    return (f"SELECT sha256, best, 0 AS confirmed FROM (SELECT sha256, max(score) AS best "
            f"FROM predictions WHERE class_index IN ({cls}) AND score >= :min_score GROUP BY sha256) "
            f"AS plain WHERE sha256 NOT IN ({judged}) UNION ALL "
            f"SELECT r.sha256, CASE WHEN max({confirmed}) = 1 THEN max(CASE WHEN j.verdict = "
            f"'confirmed' THEN r.score END) ELSE max(r.score) END, max({confirmed}) "
            "FROM predictions r LEFT JOIN judgements j ON j.sha256 = r.sha256 "
            f"AND j.class_index = r.class_index WHERE r.sha256 IN ({judged}) "
            f"AND r.class_index IN ({cls}) AND (r.score >= :min_score OR j.verdict = 'confirmed') "
            "AND (j.verdict IS NULL OR j.verdict <> 'rejected') GROUP BY r.sha256")


def below_sql(classes: frozenset[int], params: dict, min_score: float) -> str:
    """(sha256): each content whose matching labels all score under `min_score`: what
    the floor hides (rejected labels left out; a confirmed one is never hidden)."""
    cls = in_list("c", sorted(classes), params)
    params["min_score"] = min_score
    judged = f"SELECT sha256 FROM judgements WHERE class_index IN ({cls})"
    return (f"SELECT sha256 FROM predictions WHERE class_index IN ({cls}) AND sha256 NOT IN "
            f"({judged}) GROUP BY sha256 HAVING max(score) < :min_score UNION ALL "
            "SELECT r.sha256 FROM predictions r LEFT JOIN judgements j ON j.sha256 = r.sha256 "
            f"AND j.class_index = r.class_index WHERE r.sha256 IN ({judged}) AND r.class_index "
            f"IN ({cls}) AND (j.verdict IS NULL OR j.verdict <> 'rejected') GROUP BY r.sha256 "
            "HAVING max(r.score) < :min_score AND max(CASE WHEN j.verdict = 'confirmed' THEN 1 "
            "ELSE 0 END) = 0")


def search_rows(run, classes: frozenset[int], tag_keys: tuple[str, ...], *,
                 min_score: float, limit: int | None, narrowing: Narrowing,
                 columns: str = "p.path", joins: str = "") -> tuple[list, list]:
    """The rows a search finds, best first: (label matches, tag-only matches). Each
    row holds `columns` (over the path `p` and its queue row `q`, plus what `joins`
    adds); a label match's row ends with its best matching score. A rejected label
    finds nothing; a confirmed one ranks first."""
    if limit is not None and limit <= 0:
        return [], []
    by_label: list = []
    by_tag: list = []
    if classes:
        params: dict = {}
        # A path waiting in the queue (changed, or failed since) has no
        # current labels: the stored ones describe older bytes.
        sql = (f"SELECT {columns}, b.best FROM ({best_sql(classes, params, min_score)}) b "
               f"JOIN paths p ON p.sha256 = b.sha256 LEFT JOIN queue q ON q.path = p.path{joins} "
               "WHERE q.id IS NULL")
        sql += narrowing.sql(params) + " ORDER BY b.confirmed DESC, b.best DESC, p.path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        by_label = run(sql, params)
    if tag_keys and (limit is None or len(by_label) < limit):
        params = {"min_score": min_score}
        sql = (f"SELECT DISTINCT {columns} FROM paths p JOIN tags t ON t.sha256 = p.sha256 "
               f"AND t.tag_key IN ({in_list('k', tag_keys, params)}) "
               f"LEFT JOIN queue q ON q.path = p.path{joins} WHERE 1 = 1")
        if any(key in label_keys() for key in tag_keys):  # an imported keyword may be hidden
            sql += f" AND NOT {hidden_tag_sql('t')}"
        if classes:  # leave out what the label query above already found
            sql += (" AND (q.id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM predictions r "
                    "WHERE r.sha256 = p.sha256 AND r.class_index IN "
                    f"({in_list('rc', sorted(classes), params)}) AND (r.score >= :min_score OR EXISTS "
                    "(SELECT 1 FROM judgements c WHERE c.sha256 = r.sha256 AND c.class_index = "
                    "r.class_index AND c.verdict = 'confirmed')) AND NOT EXISTS (SELECT 1 "
                    "FROM judgements j WHERE j.sha256 = r.sha256 AND j.class_index = "
                    "r.class_index AND j.verdict = 'rejected')))")
        sql += narrowing.sql(params) + " ORDER BY p.path"
        if limit is not None:
            sql += f" LIMIT {int(limit - len(by_label))}"
        by_tag = run(sql, params)
    return by_label, by_tag


def hidden_count(run, classes: frozenset[int], tag_keys: tuple[str, ...], *, min_score: float,
                  narrowing: Narrowing) -> int:
    """How many paths the label query would add at `min_score` 0: those whose best
    matching score is below the floor (and that no tag of theirs finds anyway)."""
    if not classes or min_score <= 0:
        return 0
    params: dict = {}
    below = below_sql(classes, params, min_score)
    sql = (f"SELECT count(*) FROM ({below}) b JOIN paths p ON p.sha256 = b.sha256 "
           "LEFT JOIN queue q ON q.path = p.path WHERE q.id IS NULL")
    if tag_keys:
        sql += (" AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.sha256 = p.sha256 AND t.tag_key IN "
                f"({in_list('k', tag_keys, params)}))")
    return run(sql + narrowing.sql(params), params)[0][0]
