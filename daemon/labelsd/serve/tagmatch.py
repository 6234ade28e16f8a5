"""Which stored tags a search's words find: the tag itself, or a tag whose words
contain the query's words in order, each compared in its base forms ("grandma"
finds "Grandma's 90th", "cats" finds "cat at home"). Tags are compared by their key
(trimmed, case-folded), the form store.tags keeps beside each tag.

Every search asks, so it must cost the same at ten tags and at millions of tag
rows: the distinct keys come from the tag_key index one step per key, and each
distinct word's base forms are worked out once per search. A key named after a
class label may be hidden where a person rejected that label (an imported
keyword is the same claim as the label, store/judgedsql.py): such keys, and
only they, are checked for a row left to find.
"""

from __future__ import annotations

import functools
import re

from labelsd.model.taxonomy import base_forms, classes
from labelsd.store.judgedsql import hidden_tag_sql


def tag_key(tag: str) -> str:
    """The form tags are matched by (as store.tags.tag_key): trimmed, case-folded."""
    return tag.strip().casefold()


def _words(text: str, known: dict[str, frozenset[str]] | None = None) -> list[frozenset[str]]:
    """Each word of a text with its base forms ("Grandma's 90th" -> grandma, s, 90th);
    `known` remembers each word's forms across texts (tag keys share most words)."""
    known = {} if known is None else known
    out = []
    for word in re.findall(r"\w+", text.casefold()):
        forms = known.get(word)
        if forms is None:
            forms = known[word] = frozenset(base_forms(word))
        out.append(forms)
    return out


def _has_run(words: list[frozenset[str]], run: list[frozenset[str]]) -> bool:
    n = len(run)
    return any(all(words[i + j] & run[j] for j in range(n)) for i in range(len(words) - n + 1))


def matching_tag_keys(reader, query: str) -> tuple[str, ...]:
    """The stored tag keys a query finds: the tag itself, or a tag whose words
    contain the query's words in order, each compared in its base forms."""
    key = tag_key(query)
    if not key:
        return ()
    run = _words(key)
    with reader.read() as run_sql:
        keys = [row[0] for row in run_sql(DISTINCT_TAG_KEYS, {})]
        known: dict[str, frozenset[str]] = {}
        found = tuple(k for k in keys if k == key or (run and _has_run(_words(k, known), run)))
        # a key whose every row is hidden by a rejection finds nothing (the first row
        # not hidden ends the look)
        found = tuple(k for k in found if k not in label_keys() or run_sql(
            f"SELECT 1 FROM tags t WHERE t.tag_key = :k AND NOT {hidden_tag_sql('t')} LIMIT 1",
            {"k": k}))
    return found


@functools.cache
def label_keys() -> frozenset[str]:
    """Every class label as a tag key: the keys an imported keyword hidden by a
    rejected label can have (store/judgedsql.py)."""
    return frozenset(tag_key(c.label) for c in classes())


# Every stored tag key, one index step per distinct key (a loose index scan, on the
# tag_key index, SQLite and PostgreSQL alike): SELECT DISTINCT reads every tag row.
# A million photos with two imported keywords each, 4,269 distinct: 0.07 -> 0.012 s,
# paid by every search.
DISTINCT_TAG_KEYS = (
    "WITH RECURSIVE k(key) AS (SELECT min(tag_key) FROM tags UNION ALL "
    "SELECT (SELECT min(tag_key) FROM tags WHERE tag_key > k.key) FROM k WHERE k.key IS NOT NULL) "
    "SELECT key FROM k WHERE key IS NOT NULL")


__all__ = ["DISTINCT_TAG_KEYS", "label_keys", "matching_tag_keys", "tag_key"]
