"""The PNG/JPEG contact sheet: every record as a tile (thumbnail, file name,
top-3 labels with scores, tags) in a grid, under a title.

Names are drawn with a TrueType font of wide coverage (DejaVu Sans, Noto Sans,
Liberation Sans, FreeSans: whichever is installed where labels runs), so
"ünïcode name ✓.jpg" reads as written; without one, Pillow's own font is used
and a warning says that some names may show as boxes and what to install.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from labelsd.records import ImageRecord
from labelsd.serve.thumbnails import (
    BACKGROUND,
    MUTED,
    PLACEHOLDER_BACKGROUND,
    PLACEHOLDER_TEXT,
    TEXT,
    TILE_BACKGROUND,
    GalleryError,
    Thumbnail,
    label_lines,
    thumbnail,
    write_output,
)

log = logging.getLogger(__name__)

SHEET_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}

# Sheet geometry, in pixels. A cell is a tile-sized square (the thumbnail,
# centred) above CAPTION_LINES lines of text: name, three labels, tags.
MARGIN = 16
GAP = 12
CAPTION_LINES = 5
HEADER_LINES = 2  # title, then the count or the note
MAX_SHEET_SIDE = 30_000  # bounded output: well under JPEG's 65,500 and ~2 GB of RGB

# Fonts with wide coverage (Latin, Greek, Cyrillic, symbols such as ✓), most
# common first: Debian/Ubuntu paths, then bare names Pillow looks up in the
# system's font folders (other distributions put them elsewhere).
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf", "FreeSans.ttf",
)
FONT_HINT = "apt-get install fonts-dejavu-core (or fonts-noto-core)"


@functools.cache
def sheet_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The first wide-coverage TrueType font installed, at `size` px; Pillow's
    own font (Latin only) with a warning when there is none."""
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    log.warning("no wide-coverage font found (DejaVu Sans, Noto Sans, Liberation Sans); "
                "names outside Latin may show as boxes: %s", FONT_HINT)
    return ImageFont.load_default(size=size)


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
        raise GalleryError(f"{os.fspath(out_path)!r} is not a .png or .jpg file name")
    records = list(records)
    layout = sheet_layout(len(records), columns=columns, tile=tile)
    if max(layout.width, layout.height) > MAX_SHEET_SIDE:
        raise GalleryError(
            f"a sheet of {len(records)} images in {layout.columns} columns would be "
            f"{layout.width}x{layout.height} px (the limit is {MAX_SHEET_SIDE}); "
            "use more --columns or a smaller --limit")
    font = sheet_font(layout.font_size)
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
    write_output(out_path, buf.getvalue())
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
