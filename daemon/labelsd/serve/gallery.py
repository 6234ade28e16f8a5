"""Contact sheets of image records: one PNG/JPEG grid (`render_sheet`, in
gallery_sheet.py) or one self-contained HTML page (`render_html`, here), each
image with its file name, its top-3 labels with scores and its tags.

Thumbnails come from thumbnails.py (Pillow only, no TensorFlow); a file that is
gone or cannot be read becomes a placeholder that says why, never a failed
sheet. Both writers replace the output file atomically. The HTML page needs no
server and no network: the thumbnails are base64 JPEG data URIs, the style and
the filter box are inline, and a Content-Security-Policy forbids loading
anything else; each thumbnail links to its photo (a file: URL), so a click
opens the full picture.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from labelsd.records import ImageRecord
from labelsd.serve import gallery_html
from labelsd.serve.gallery_sheet import SHEET_FORMATS
from labelsd.serve.thumbnails import GalleryError, label_lines, score_text, thumbnail, write_output

HTML_SUFFIXES = frozenset({".html", ".htm"})
HTML_THUMB = 256  # longest side of an HTML thumbnail
HTML_JPEG_QUALITY = 80


def output_kind(path: str | os.PathLike) -> str:
    """'sheet' or 'html', from the output file's suffix; GalleryError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in SHEET_FORMATS:
        return "sheet"
    if suffix in HTML_SUFFIXES:
        return "html"
    raise GalleryError(f"cannot tell the format of {os.fspath(path)!r}: "
                       "name it .png, .jpg, .jpeg (one image) or .html (a web page)")


def render_html(records: Sequence[ImageRecord], out_path: str | os.PathLike, *,
                title: str, note: str | None = None) -> int:
    """Write a self-contained HTML page: a <figure> per record (thumbnail as a
    base64 JPEG data URI, or a placeholder with the reason), a <figcaption>
    with name, labels with scores and tags, and a filter box. Every piece of
    user data is escaped. Returns the number of figures."""
    records = list(records)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{gallery_html.CSP}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{esc(title)}</title>\n<style>{gallery_html.STYLE}</style>\n</head>\n<body>\n",
        f"<header>\n<h1>{esc(title)}</h1>\n",
    ]
    counted = f"{len(records)} image{'' if len(records) == 1 else 's'}" if records else "no images"
    parts.append(f"<p class=\"note\">{esc(counted)}" + (f" - {esc(note)}" if note else "") + "</p>\n")
    parts.append("<input id=\"filter\" type=\"search\" placeholder=\"filter by label, tag or name\" "
                 "aria-label=\"filter by label, tag or name\"> <span id=\"shown\"></span>\n"
                 "</header>\n<main>\n")
    for rec in records:
        parts.append(_figure(rec))
    parts.append(f"</main>\n<script>{gallery_html.SCRIPT}</script>\n</body>\n</html>\n")
    write_output(out_path, "".join(parts).encode("utf-8"))
    return len(records)


def _figure(rec: ImageRecord) -> str:
    esc = html.escape
    name = os.path.basename(rec.path) or rec.path
    search_text = " ".join([name] + [p.label for p in rec.labels] + list(rec.tags)).lower()
    thumb = thumbnail(rec.path, HTML_THUMB)
    if thumb.image is not None:
        buf = BytesIO()
        thumb.image.save(buf, "JPEG", quality=HTML_JPEG_QUALITY)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        w, h = thumb.image.size
        picture = (f"<a href=\"{esc(Path(rec.path).as_uri())}\" title=\"open {esc(name)}\">"
                   f"<img src=\"data:image/jpeg;base64,{data}\" width=\"{w}\" height=\"{h}\" "
                   f"alt=\"{esc(name)}\"></a>")
    else:
        picture = f"<div class=\"placeholder\">{esc(thumb.reason or '')}</div>"
    if rec.labels:
        labels = "".join(f"<li><span class=\"label\">{esc(p.label)}</span> "
                         f"<span class=\"score\">{score_text(p.score)}</span></li>"
                         for p in rec.labels[:3])
        labels = f"<ol class=\"labels\">{labels}</ol>"
    else:
        labels = f"<div class=\"status\">{esc(label_lines(rec)[0])}</div>"
    tags = (f"<div class=\"tags\">tags: {esc(', '.join(rec.tags))}</div>" if rec.tags else "")
    return (f"<figure data-search=\"{esc(search_text)}\" data-path=\"{esc(rec.path)}\">"
            f"{picture}<figcaption><div class=\"name\" title=\"{esc(rec.path)}\">{esc(name)}</div>"
            f"{labels}{tags}</figcaption></figure>\n")


__all__ = ["GalleryError", "output_kind", "render_html"]
