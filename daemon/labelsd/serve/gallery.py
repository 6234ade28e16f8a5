"""Contact sheets of image records: one PNG/JPEG grid (`render_sheet`) or one
self-contained HTML page (`render_html`), each image with its file name, its
top-3 labels with scores and its tags.

Pillow only (no TensorFlow): thumbnails are decoded with JPEG draft mode (libjpeg
decodes a 12 MP photo at 1/8 scale), turned upright by EXIF orientation, and
shrunk keeping the aspect ratio. A file that is gone or cannot be read becomes
a placeholder tile that says why, never a failed sheet. Both writers replace
the output file atomically. The HTML page needs no server and no network: the
thumbnails are base64 JPEG data URIs, the style and the filter box are inline,
and a Content-Security-Policy forbids loading anything else.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from labelsd.errors import LabelsError
from labelsd.fileio import atomic_output, open_regular
from labelsd.model import decode as images
from labelsd.records import ImageRecord
from labelsd.serve import gallery_html

log = logging.getLogger(__name__)

SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
HTML_SUFFIXES = frozenset({".html", ".htm"})

# Sheet geometry, in pixels. A cell is a tile-sized square (the thumbnail,
# centred) above CAPTION_LINES lines of text: name, three labels, tags.
MARGIN = 16
GAP = 12
CAPTION_LINES = 5
HEADER_LINES = 2  # title, then the count or the note
MAX_SHEET_SIDE = 30_000  # bounded output: well under JPEG's 65,500 and ~2 GB of RGB

BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (232, 232, 232)
PLACEHOLDER_BACKGROUND = (250, 226, 226)
TEXT = (20, 20, 20)
MUTED = (110, 110, 110)
PLACEHOLDER_TEXT = (150, 30, 30)

HTML_THUMB = 256  # longest side of an HTML thumbnail
HTML_JPEG_QUALITY = 80


class GalleryError(LabelsError):
    """A contact sheet cannot be written (bad output name, too large, unwritable)."""


def output_kind(path: str | os.PathLike) -> str:
    """'sheet' or 'html', from the output file's suffix; GalleryError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in SHEET_FORMATS:
        return "sheet"
    if suffix in HTML_SUFFIXES:
        return "html"
    raise GalleryError(f"cannot tell the format of {os.fspath(path)!r}: "
                       "name it .png, .jpg, .jpeg (one image) or .html (a web page)")


# ---- text shared by both outputs ----------------------------------------------


def score_text(score: float) -> str:
    return f"{score:.1%}"


def label_lines(rec: ImageRecord) -> list[str]:
    """What goes under an image in place of its labels when it has none."""
    if rec.labels:
        return [f"{p.label} {score_text(p.score)}" for p in rec.labels[:3]]
    if rec.status == "failed":
        return [f"failed: {rec.error or 'unknown reason'}"]
    return [rec.status]  # pending, or missing before it was ever classified


# ---- thumbnails -------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    image: Image.Image | None  # RGB, longest side <= the tile; None for a placeholder
    reason: str | None = None  # why there is no image ("missing", "not an image", ...)


def thumbnail(path: str, size: int) -> Thumbnail:
    """An upright thumbnail of the file at `path` fitting `size`x`size`, or the
    reason there is none. Never raises for a bad file, never follows a symlink
    and never blocks on a FIFO (fileio.open_regular, as the reader)."""
    try:
        fh, _ = open_regular(path, max_bytes=images.max_file_bytes())
        # The decoder's allow-list (no EPS, no PDF) and its HEIF opener.
        with fh, Image.open(fh, formats=images.register_openers()) as img:
            width, height = img.size
            if width * height > images.MAX_PIXELS:
                return Thumbnail(None, f"too large to show ({width}x{height})")
            img.draft("RGB", (size, size))  # JPEG: decode at 1/2..1/8 scale, never below size
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - broken EXIF: show it as stored
                log.debug("unreadable EXIF in %s", path, exc_info=True)
                upright = img
            upright = images.to_rgb_or_rgba(images.shrink_wide(upright, (2 * size, 2 * size)))
            upright.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
            if upright.mode == "RGBA":
                flat = Image.new("RGB", upright.size, TILE_BACKGROUND)
                flat.paste(upright, mask=upright.getchannel("A"))
                upright = flat
            return Thumbnail(upright.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - plugins raise anything on bad data
        log.debug("thumbnail of %s failed", path, exc_info=True)
        return Thumbnail(None, str(images.image_error(err)))


# ---- PNG / JPEG sheet ---------------------------------------------------------------


@dataclass(frozen=True)
class SheetLayout:
    columns: int
    rows: int
    tile: int
    font_size: int
    line_height: int
    cell_width: int
    cell_height: int
    header_height: int
    width: int
    height: int

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the thumbnail square of image `index`."""
        row, col = divmod(index, self.columns)
        left = MARGIN + col * (self.cell_width + GAP)
        top = self.header_height + row * (self.cell_height + GAP)
        return left, top, left + self.tile, top + self.tile


def sheet_layout(count: int, *, columns: int = 5, tile: int = 256) -> SheetLayout:
    """The grid for `count` images: never more columns than images (an empty
    sheet keeps one column, for its note)."""
    if columns < 1 or tile < 32:
        raise GalleryError("a sheet needs at least one column and tiles of at least 32 px")
    font_size = max(10, tile // 20)
    line_height = round(font_size * 1.4)
    cols = max(1, min(columns, count))
    rows = -(-count // cols)
    cell_height = tile + 6 + CAPTION_LINES * line_height
    header_height = MARGIN + HEADER_LINES * line_height + GAP
    width = 2 * MARGIN + cols * tile + (cols - 1) * GAP
    height = header_height + rows * cell_height + max(rows - 1, 0) * GAP + MARGIN
    return SheetLayout(columns=cols, rows=rows, tile=tile, font_size=font_size,
                       line_height=line_height, cell_width=tile, cell_height=cell_height,
                       header_height=header_height, width=width, height=height)


@dataclass
class SheetResult:
    path: str  # the file written
    count: int  # tiles drawn
    layout: SheetLayout
    placeholders: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def width(self) -> int:
        return self.layout.width

    @property
    def height(self) -> int:
        return self.layout.height


def render_sheet(records: Sequence[ImageRecord], out_path: str | os.PathLike, *,
                 columns: int = 5, tile: int = 256, title: str | None = None,
                 note: str | None = None) -> SheetResult:
    """Draw every record as a tile (thumbnail, name, top-3 labels, tags) in a
    grid and write it as PNG or JPEG (by the suffix of `out_path`). `note` is
    printed under the title (e.g. that results were cut); an empty sheet says
    "no images". Raises GalleryError when the sheet would exceed MAX_SHEET_SIDE."""
    fmt = SHEET_FORMATS.get(Path(out_path).suffix.lower())
    if fmt is None:
        output_kind(out_path)  # raises with the advice
        raise GalleryError(f"{os.fspath(out_path)!r} is not a .png or .jpg file name")
    records = list(records)
    layout = sheet_layout(len(records), columns=columns, tile=tile)
    if max(layout.width, layout.height) > MAX_SHEET_SIDE:
        raise GalleryError(
            f"a sheet of {len(records)} images in {layout.columns} columns would be "
            f"{layout.width}x{layout.height} px (the limit is {MAX_SHEET_SIDE}); "
            "use more --columns or a smaller --limit")
    font = ImageFont.load_default(size=layout.font_size)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    text_width = layout.width - 2 * MARGIN
    draw.text((MARGIN, MARGIN), _fit(draw, title or "labels gallery", font, text_width),
              fill=TEXT, font=font)
    counted = f"{len(records)} image{'' if len(records) == 1 else 's'}" if records else "no images"
    draw.text((MARGIN, MARGIN + layout.line_height),
              _fit(draw, f"{counted} - {note}" if note else counted, font, text_width),
              fill=MUTED, font=font)

    result = SheetResult(path=os.fspath(out_path), count=len(records), layout=layout)
    for index, rec in enumerate(records):
        thumb = thumbnail(rec.path, tile)
        if thumb.image is None:
            result.placeholders.append((rec.path, thumb.reason))
        _draw_tile(sheet, draw, font, layout, index, rec, thumb)

    buf = BytesIO()
    if fmt == "JPEG":
        sheet.save(buf, "JPEG", quality=90, optimize=True)
    else:
        sheet.save(buf, "PNG", optimize=False, compress_level=6)
    _write_output(out_path, buf.getvalue())
    return result


def _draw_tile(sheet, draw, font, layout: SheetLayout, index: int, rec: ImageRecord,
               thumb: Thumbnail) -> None:
    left, top, right, bottom = layout.tile_box(index)
    tile = layout.tile
    if thumb.image is not None:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=TILE_BACKGROUND)
        w, h = thumb.image.size
        sheet.paste(thumb.image, (left + (tile - w) // 2, top + (tile - h) // 2))
    else:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=PLACEHOLDER_BACKGROUND,
                       outline=PLACEHOLDER_TEXT)
        lines = _wrap(draw, thumb.reason or "", font, tile - 16)[:4]
        y = top + (tile - len(lines) * layout.line_height) // 2
        for line in lines:
            x = left + (tile - draw.textlength(line, font=font)) / 2
            draw.text((x, y), line, fill=PLACEHOLDER_TEXT, font=font)
            y += layout.line_height

    y = bottom + 6
    labels = [f"{n}. {line}" if rec.labels else line
              for n, line in enumerate(label_lines(rec), start=1)]
    labels += [""] * (3 - len(labels))  # tags stay on the last line of every cell
    caption = ([(os.path.basename(rec.path) or rec.path, TEXT)]
               + [(line, TEXT) for line in labels]
               + [("tags: " + ", ".join(rec.tags) if rec.tags else "", MUTED)])
    for line, colour in caption:
        if line:
            draw.text((left, y), _fit(draw, line, font, tile), fill=colour, font=font)
        y += layout.line_height


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if draw.textlength(text[:mid] + "…", font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(lines[-1] + " " + word, font=font) <= width:
            lines[-1] += " " + word
        else:
            lines.append(_fit(draw, word, font, width))
    return lines


# ---- HTML page -------------------------------------------------------------------------

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
    _write_output(out_path, "".join(parts).encode("utf-8"))
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
        picture = (f"<img src=\"data:image/jpeg;base64,{data}\" width=\"{w}\" height=\"{h}\" "
                   f"alt=\"{esc(name)}\">")
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


# ---- output ---------------------------------------------------------------------------------


def _write_output(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` atomically, so a reader never sees half a sheet."""
    try:
        with atomic_output(path, "wb") as out:
            out.write(data)
    except OSError as err:
        raise GalleryError(f"cannot write {os.path.abspath(os.fspath(path))}: "
                           f"{err.strerror or err}; check that its folder exists and is "
                           "writable") from err


__all__ = ["GalleryError", "SheetLayout", "SheetResult", "Thumbnail", "output_kind",
           "render_html", "render_sheet", "sheet_layout", "thumbnail"]
