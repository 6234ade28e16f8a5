"""Single stages of the pipeline, timed on their own: the model's timeline during one
`labels scan` run, and reading a photo's metadata."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def bench_timeline(classifier, photos: list[Path], batch_size: int, workdir: Path,
                   decode_workers: int) -> dict:
    """One more pipeline run with a Timeline: is the model ever idle during the burst?"""
    from labelsd.pipeline.scan import scan_folder
    from labelsd.pipeline.timeline import Timeline
    from labelsd.store.engine import open_store

    timeline = Timeline()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, open_store(f"{tmp}/labels.db") as store:
        scan_folder(store, classifier, photos[0].parent, batch_size=batch_size,
                    decode_workers=decode_workers, timeline=timeline)
    summary = timeline.model_summary()
    decodes = [s.end - s.start for s in timeline.spans if s.kind == "decode"]
    summary["decode_ms"] = 1000 * sum(decodes) / max(1, len(decodes))
    return summary


def bench_metadata(photo: Path, workdir: Path, repeats: int = 50) -> float:
    """Seconds to read a photo's metadata (labelsd.xmp.metadata, as the reader does)
    from its bytes, on a copy of `photo` given a phone's EXIF (date, make, model,
    GPS), IPTC keywords and an XMP dc:subject, with a sidecar beside it."""
    import shutil

    import exiv2

    from labelsd.xmp.metadata import read_photo_meta
    from labelsd.xmp.sidecar import write_sidecar

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        copy = Path(tmp) / photo.name
        shutil.copyfile(photo, copy)
        image = exiv2.ImageFactory.open(str(copy))
        image.readMetadata()
        exif, iptc, xmp = image.exifData(), image.iptcData(), image.xmpData()
        exif["Exif.Photo.DateTimeOriginal"] = "2024:07:14 15:30:00"
        exif["Exif.Image.Make"], exif["Exif.Image.Model"] = "Apple", "iPhone 13"
        exif["Exif.GPSInfo.GPSLatitude"], exif["Exif.GPSInfo.GPSLatitudeRef"] = "48/1 51/1 2400/100", "N"
        for word in ("beach", "holiday"):
            iptc.add(exiv2.IptcKey("Iptc.Application2.Keywords"), exiv2.StringValue(word))
        xmp["Xmp.dc.subject"] = "sunset"
        image.setExifData(exif)
        image.setIptcData(iptc)
        image.setXmpData(xmp)
        image.writeMetadata()
        write_sidecar(str(copy), ["tabby"], ["vacation"])
        data = copy.read_bytes()
        if read_photo_meta(data, str(copy)) is None:
            sys.exit("metadata benchmark: nothing read back from the test photo")
        start = time.perf_counter()
        for _ in range(repeats):
            read_photo_meta(data, str(copy))
        return (time.perf_counter() - start) / repeats
