"""XMP sidecars: `NAME.EXT.xmp` beside a photo, holding its labels and tags as keywords.

Merge, never clobber. An existing sidecar is read with exiv2 and only
labelsd's own keywords change in it; every other field (a digiKam rating, a
darktable history, another program's keywords) is written back as it was read.
What labelsd wrote last time is remembered in the sidecar itself
(`labelsd:keywords`), so:

- a keyword labelsd wrote that is gone now was removed by the person in another
  program, and a label the person rejected in labelsd is wrong: both go on
  `labelsd:suppressed` and are not written again (until the person gives them
  back in labelsd, `lift`); suppression.py owns that idea, and says which of the
  photo's labels the sidecar took away (`SidecarWrite.taken_away`), for the
  caller to store as rejections;
- a keyword labelsd wrote that it no longer wants (an untagged tag) is removed;
- keywords labelsd never wrote are kept.

Labels go into `dc:subject` and, as one group a person can find or remove at
once, under `labelsd|` in `lr:hierarchicalSubject` (Lightroom, darktable) and
`labelsd/` in `digiKam:TagsList` (digiKam's own separator). Tags go into
`dc:subject`. exiv2 works in memory (under `exiv.LOCK`); the file appears
atomically (`atomic_output`: a hidden `.part` name the watcher ignores, flushed,
then renamed over the old one).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from labelsd.errors import ImageError, SidecarError, SidecarFolderReadOnly
from labelsd.fileio import FileTooLarge, atomic_output, name_max
from labelsd.paths import shown
from labelsd.xmp import exiv, suppression
from labelsd.xmp.metadata import HIERARCHY_ROOT, read_sidecar, sidecar_path
from labelsd.xmp.suppression import SUBJECT, SUPPRESSED, WRITTEN

log = logging.getLogger(__name__)

HIERARCHY = "Xmp.lr.hierarchicalSubject"
DIGIKAM = "Xmp.digiKam.TagsList"

LR_PREFIX = HIERARCHY_ROOT + "|"
DIGIKAM_PREFIX = HIERARCHY_ROOT + "/"


def _unique(words: Iterable[str]) -> list[str]:
    kept: dict[str, str] = {}
    for word in words:
        kept.setdefault(word.casefold(), word)
    return list(kept.values())


@dataclass(frozen=True)
class SidecarWrite:
    """What `write_sidecar` did: whether it wrote the file (the truth value), and
    which of the labels it was given the sidecar says a person took away."""

    written: bool
    taken_away: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.written


def merge_keywords(xmp, labels: list[str], tags: list[str], lift: Iterable[str] = (),
                   rejected: Iterable[str] = ()) -> bool:
    """Put labelsd's keywords into XmpData `xmp` (see the module docstring); the
    `rejected` labels go on the suppressed list. Returns whether anything changed."""
    fold = str.casefold
    present = exiv.values(xmp, SUBJECT)
    written_keys = {fold(k) for k in suppression.written(xmp)}
    suppressed = suppression.suppressed(xmp, rejected, lift)
    labels = [w for w in _unique(labels) if fold(w) not in suppressed]
    wanted = [w for w in _unique([*labels, *tags]) if fold(w) not in suppressed]
    foreign = [w for w in present if fold(w) not in written_keys]
    changes = [
        (SUBJECT, _unique(foreign + wanted), "bag"),
        (HIERARCHY, [h for h in exiv.values(xmp, HIERARCHY) if not h.startswith(LR_PREFIX)]
         + [LR_PREFIX + w for w in labels], "bag"),
        (DIGIKAM, [h for h in exiv.values(xmp, DIGIKAM) if not h.startswith(DIGIKAM_PREFIX)]
         + [DIGIKAM_PREFIX + w for w in labels], "seq"),
        (WRITTEN, wanted, "bag"),
        (SUPPRESSED, suppression.sorted_words(suppressed), "bag"),
    ]
    changed = False
    for key, items, kind in changes:
        if items != exiv.values(xmp, key):  # an unchanged field is not touched at all
            exiv.set_array(xmp, key, items, kind)
            changed = True
    return changed


def write_sidecar(image_path: str, labels: list[str], tags: list[str],
                  lift: Iterable[str] = (), rejected: Iterable[str] = ()) -> SidecarWrite:
    """Create or update the sidecar of `image_path` with these labels and tags, the
    `rejected` labels suppressed. Returns a false SidecarWrite when it already said
    all this, or when there is no sidecar and nothing to say (no label, no tag, no
    rejected label):
    nothing written; either way it names the `labels` the sidecar says were taken
    away. What is written is always a whole XMP packet. SidecarError (naming the
    photo) when it cannot be read or written."""
    target = sidecar_path(image_path)
    if len(os.fsencode(os.path.basename(target))) > name_max(os.path.dirname(target)):
        raise SidecarError(f"{image_path}: its name is too long for a sidecar beside it "
                           f"(NAME.EXT.xmp would be over {name_max(os.path.dirname(target))} bytes)")
    try:
        data = read_sidecar(image_path)  # FIFOs, devices, folders, links: never opened
    except FileTooLarge as err:
        raise SidecarError(f"the sidecar of {image_path} is not read ({err}); left as it is") from err
    except ImageError as err:
        raise SidecarError(f"the sidecar of {image_path} {err}; left as it is") from err
    except OSError as err:
        raise SidecarError(f"cannot read the sidecar of {image_path}: {err.strerror or err}; "
                           "left as it is") from err
    rejected = list(rejected)
    if data is None and not labels and not tags and not rejected:
        return SidecarWrite(False)  # nothing to say: no sidecar (not an empty one)
    with exiv.locked() as exiv2:
        if data is None:
            xmp = exiv2.XmpData()
        else:
            try:
                xmp = exiv.read_xmp(data)
            except (exiv.XmpRefused, exiv2.Exiv2Error) as err:
                raise SidecarError(f"the sidecar of {image_path} is not XMP labelsd reads "
                                   f"({err}); left as it is") from err
        try:
            away = suppression.taken_away(xmp)
            lifted = {str.casefold(w) for w in lift}
            taken = tuple(w for w in labels if str.casefold(w) in away and str.casefold(w) not in lifted)
            if not merge_keywords(xmp, labels, tags, lift, rejected) and data is not None:
                return SidecarWrite(False, taken)
            packet = exiv.to_sidecar_bytes(xmp)
        except exiv2.Exiv2Error as err:
            raise SidecarError(f"cannot write the sidecar of {image_path}: {err}") from err
    if not exiv.whole_packet(packet):  # never a sidecar that no program can read
        raise SidecarError(f"cannot write the sidecar of {image_path}: exiv2 made no whole XMP packet")
    try:  # hidden and partial (.NAME.xmp.<hex>.part): the watcher ignores it
        with atomic_output(target, "wb", follow=False) as out:
            out.write(packet)
    except OSError as err:
        raise _unwritable(image_path, err) from err
    log.debug("wrote %s", shown(target))
    return SidecarWrite(True, taken)


def _unwritable(image_path: str, err: OSError) -> SidecarError:
    folder = os.path.dirname(image_path)
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # said once for the folder
        return SidecarFolderReadOnly(
            f"cannot write sidecars in {folder}: {err.strerror} (the system service sees photo "
            "folders read-only: add them to ReadWritePaths=, see the README)")
    return SidecarError(f"cannot write the sidecar of {image_path}: {err.strerror or err}")


__all__ = ["SidecarWrite", "merge_keywords", "sidecar_path", "write_sidecar"]
