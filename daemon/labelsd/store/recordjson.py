"""Image records as the JSON text `--json` prints, written straight from record rows.

The text of a record is, byte for byte, `json.dumps(d, ensure_ascii=False)` of the
dict `recordsql.record_dicts` builds from the same row (", " and ": " separators,
Python's float repr, non-ASCII as is, NaN and Infinity as json.dumps writes them):
tests/test_reader.py holds the two to that on generated rows of every kind.

Why a second form: `labels search cat --json` at a million images prints 18,738
records, 12 MB. Building each record as a dict and encoding the dict took 0.135 s
of the command's 0.45; writing the text from the row takes 0.085 s. The labels'
unchanging part (rank, label, wnid, class) is encoded once per distinct label, not
once per image. Everything that is not `--json` keeps the dicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from json.encoder import c_make_encoder, encode_basestring
from typing import TextIO

from labelsd.store.judgedsql import Judged, judgements_of
from labelsd.store.recordsql import JUDGED_AT, LABEL_RANKS, LABELS_AT, TAGGED_AT, Run, as_utc, tags_of


def _encoder() -> Callable[[object], str]:
    """json.dumps(value, ensure_ascii=False) for any value, with the C encoder built
    once: JSONEncoder.encode builds a new one (and its cycle-check dict) at every
    call, a third of the time a small record takes. No cycle check: a record has no
    cycles. Where the C accelerator is absent, JSONEncoder.encode itself."""
    plain = json.JSONEncoder(ensure_ascii=False)
    if c_make_encoder is None:
        return plain.encode
    chunks = c_make_encoder(None, plain.default, encode_basestring, None, plain.key_separator,
                            plain.item_separator, False, False, True)
    join = "".join
    return lambda value: join(chunks(value, 0))


encode = _encoder()

_RECORD = ('{"path": %s, "sha256": %s, "status": %s, "error": %s, "width": %s, "height": %s, '
           '"labels": [%s], "tags": [%s], "classified_at": %s, "taken_at": %s, "camera": %s, '
           '"gps": %s, "model": %s, "rejected": [%s]}')
_LABEL = '{"rank": %s, "label": %s, "wnid": %s, "class_index": %s, "score": '
_UNCONFIRMED, _CONFIRMED = ', "confirmed": false}', ', "confirmed": true}'
_GPS = '{"lat": %s, "lon": %s}'


def record_json(run: Run, rows: Iterable[Sequence]) -> list[str]:
    """Each record's JSON text, from rows as `recordsql.record_dicts` takes them, in
    their order, with their tags and judgements."""
    rows = rows if isinstance(rows, list) else list(rows)
    tags = tags_of(run, {r[1] for r in rows if r[TAGGED_AT]})
    judged = {sha: Judged(found) for sha, found in judgements_of(
        run, {r[1] for r in rows if r[JUDGED_AT] and r[2] != "pending"}).items()}
    label_at = [(rank, LABELS_AT + 4 * i) for i, rank in enumerate(LABEL_RANKS)]
    text = _value
    times: dict = {None: "null"}  # a batch of results shares one time: encode each once
    prefixes: dict = {}  # (rank, label, wnid, class) -> its text up to the score
    out: list[str] = []
    for r in rows:
        when = r[6]
        stamp = times.get(when)
        if stamp is None:
            stamp = times[when] = encode(as_utc(when).isoformat())
        labels = []
        judgement = judged.get(r[1]) if r[JUDGED_AT] and r[2] != "pending" else None
        if r[2] != "pending":  # a pending path's stored labels describe older bytes
            for rank, at in label_at:
                if r[at] is not None:
                    suffix = _UNCONFIRMED
                    if judgement is not None:
                        if r[at + 2] in judgement.rejected_classes:
                            continue
                        if r[at + 2] in judgement.confirmed:
                            suffix = _CONFIRMED
                    key = (rank, r[at], r[at + 1], r[at + 2])
                    prefix = prefixes.get(key)
                    if prefix is None:
                        prefix = prefixes[key] = _LABEL % tuple(map(encode, key))
                    labels.append(prefix + text(r[at + 3]) + suffix)
        tagged = tags.get(r[1]) if r[TAGGED_AT] else None
        if tagged and judgement is not None:
            tagged = judgement.tags(tagged)
        out.append(_RECORD % (
            text(r[0]), text(r[1]), text(r[2]), text(r[3]), text(r[4]), text(r[5]),
            ", ".join(labels), ", ".join(map(text, tagged)) if tagged else "",
            stamp, text(r[7]), text(r[8]),
            "null" if r[9] is None or r[10] is None else _GPS % (text(r[9]), text(r[10])),
            text(r[11]), ", ".join(map(encode, judgement.rejected)) if judgement else ""))
    return out


def _value(value, str_=str, float_=float, int_=int, finite=float.__repr__,
           whole=int.__repr__) -> str:
    """One value as json.dumps writes it: the common kinds inline, the rest (NaN,
    infinities, booleans, anything else) by the encoder itself."""
    kind = type(value)
    if kind is str_:
        return encode_basestring(value)
    if value is None:
        return "null"
    if kind is float_ and value - value == 0:  # finite
        return finite(value)
    if kind is int_:
        return whole(value)
    return encode(value)


# Records are encoded and written this many at a time (one write, not one per record).
WRITE_EVERY = 1000


def write_list(texts: Iterable[str], out: TextIO) -> int:
    """A JSON list of records already encoded (`encode`, or `record_json`'s text),
    as json.dumps's bytes with one record a line: "[", then ",\n  "-separated
    records, then "]" and a newline. Written WRITE_EVERY records at a time; returns
    how many. `labels search --json` and `labels serve`'s /api/search both write
    their lists with it, so the two are the same bytes."""
    count = 0
    parts = ["["]
    for text in texts:
        parts.append(",\n  " + text if count else "\n  " + text)
        count += 1
        if len(parts) >= WRITE_EVERY:
            out.write("".join(parts))
            parts.clear()
    parts.append("\n]\n" if count else "]\n")
    out.write("".join(parts))
    return count


__all__ = ["WRITE_EVERY", "encode", "record_json", "write_list"]
