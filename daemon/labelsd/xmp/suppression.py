"""Suppression: which of labelsd's keywords a sidecar says a person took away, and
what labelsd puts on its list. The one owner of the idea; sidecar.py (writing)
and metadata.py (reading a photo's sidecar) ask here.

labelsd remembers in the sidecar what it wrote last time (`labelsd:keywords`). A
keyword it wrote that dc:subject no longer holds was removed by the person in
another program (digiKam, darktable, Lightroom): it goes on `labelsd:suppressed`
and is not written again. A label the person rejected in labelsd goes there too
(and so leaves dc:subject and the hierarchical keywords). Either way, the person
said the same thing: "not this". So a suppressed keyword that names one of the
photo's labels is, read back, a rejection of that label (source "xmp",
store/judgements.py), and a label rejected in labelsd is a suppressed keyword:
the sidecar and the database say one thing.

The person takes a suppression back in labelsd (`lift`): tagging the photo with
the word again, or unrejecting or confirming the label.
"""

from __future__ import annotations

from collections.abc import Iterable

from labelsd.xmp import exiv

WRITTEN = "Xmp.labelsd.keywords"  # what labelsd wrote last time
SUPPRESSED = "Xmp.labelsd.suppressed"  # taken away by the person: not written again
SUBJECT = "Xmp.dc.subject"

fold = str.casefold


def written(xmp) -> list[str]:
    """The keywords labelsd wrote into this XmpData last time (exiv.LOCK held)."""
    return exiv.values(xmp, WRITTEN)


def taken_away(xmp) -> dict[str, str]:
    """What the sidecar says the person took away: its suppressed list, and what
    labelsd wrote that dc:subject no longer holds ({case-folded: as written})."""
    present = {fold(k) for k in exiv.values(xmp, SUBJECT)}
    away = {fold(k): k for k in exiv.values(xmp, SUPPRESSED)}
    for word in written(xmp):
        if fold(word) not in present:  # removed in another program since
            away.setdefault(fold(word), word)
    return away


def suppressed(xmp, rejected: Iterable[str] = (), lift: Iterable[str] = ()) -> dict[str, str]:
    """The suppressed list to write: what was taken away, and the labels rejected in
    labelsd, less what the person gave back in labelsd (`lift`)."""
    away = taken_away(xmp)
    for word in rejected:
        away.setdefault(fold(word), word)
    for word in lift:
        away.pop(fold(word), None)
    return away


def sorted_words(away: dict[str, str]) -> list[str]:
    """The suppressed list as it is written: by case-folded word."""
    return sorted(away.values(), key=fold)


__all__ = ["SUBJECT", "SUPPRESSED", "WRITTEN", "sorted_words", "suppressed", "taken_away", "written"]
