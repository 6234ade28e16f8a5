"""Contact sheets (labelsd.serve.gallery, `labels gallery`): real image files in
tmp_path, real records written through the queue into a real store, and the
HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from imagegen import (
    decoded_sizes,
    make_exif_rotated_jpeg,
    make_image,
    make_not_an_image,
    make_phone_jpeg,
)
from labels_cli.app import app
from labelsd import records
from labelsd.model.taxonomy import class_by_index
from labelsd.paths import canonical_path
from labelsd.records import ImageRecord, Prediction
from labelsd.serve import gallery, gallery_sheet, thumbnails
from labelsd.store import contents, tags, workqueue

runner = CliRunner()

PERSIAN, TABBY, SIAMESE, GOLDEN, BEAGLE, SPORTS_CAR = 283, 281, 284, 207, 162, 817


def _predictions(*pairs: tuple[int, float]) -> list[Prediction]:
    out = []
    for rank, (index, score) in enumerate(pairs, start=1):
        cls = class_by_index(index)
        out.append(Prediction(rank=rank, label=cls.label, wnid=cls.wnid,
                              class_index=index, score=score))
    return out


def _classify(store, files: dict[Path, list[Prediction]]) -> None:
    """Put `files` through the queue as the service would: enqueue, claim,
    record one 'classified' outcome per file in one transaction."""
    workqueue.enqueue(store, [str(p) for p in files])
    claims = workqueue.claim(store, "gallery-test", len(files))
    assert len(claims) == len(files)
    by_path = {canonical_path(p): preds for p, preds in files.items()}
    outcomes = []
    for c in claims:
        data = Path(c.path).read_bytes()
        with Image.open(c.path) as img:
            size = img.size
        outcomes.append(records.Outcome(
            claim=c, kind=records.OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), mtime_ns=os.stat(c.path).st_mtime_ns, width=size[0],
            height=size[1], format="PNG", model="inception_v3",
            predictions=by_path[c.path]))
    contents.record_outcomes(store, "gallery-test", outcomes)


def _cats(store, folder: Path, n: int) -> list[Path]:
    """`n` distinct images classified as cats, scores falling with the index."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(n):
        path = make_image(folder / f"cat{i}.png", size=(120 + 10 * i, 90), seed=i)
        files[path] = _predictions((PERSIAN, 0.9 - i * 0.05), (TABBY, 0.05), (SIAMESE, 0.01))
    _classify(store, files)
    return list(files)


def _records(store, paths) -> list:
    return store.records_for_paths(canonical_path(p) for p in paths)


def _expected_size(n: int, columns: int, tile: int) -> tuple[int, int]:
    """The grid the docstring of render_sheet promises, computed from the constants."""
    font = max(10, tile // 20)
    line = round(font * 1.4)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    cell_h = tile + 6 + gallery_sheet.CAPTION_LINES * line
    header = gallery_sheet.MARGIN + gallery_sheet.HEADER_LINES * line + gallery_sheet.GAP
    width = 2 * gallery_sheet.MARGIN + cols * tile + (cols - 1) * gallery_sheet.GAP
    height = header + rows * cell_h + max(rows - 1, 0) * gallery_sheet.GAP + gallery_sheet.MARGIN
    return width, height


# ---- PNG / JPEG sheet ----------------------------------------------------------------


@pytest.mark.parametrize("count, columns", [(1, 5), (7, 3), (10, 5)])
def test_sheet_has_one_tile_per_record(store, tmp_path, count, columns):
    paths = _cats(store, tmp_path / "photos", count)
    out = tmp_path / "sheet.png"
    result = gallery_sheet.render_sheet(_records(store, paths), out, columns=columns, tile=128)

    assert result.count == count and result.placeholders == []
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == _expected_size(count, columns, 128) == (result.width, result.height)
        sheet = sheet.convert("RGB")
        layout = result.layout
        cells = layout.columns * layout.rows
        for index in range(cells):
            left, top, right, bottom = layout.tile_box(index)
            centre = sheet.getpixel(((left + right) // 2, (top + bottom) // 2))
            if index < count:  # a thumbnail: the seeded pattern, not the page
                assert centre != thumbnails.BACKGROUND, index
                # its caption: dark text on the first line under the tile
                caption = sheet.crop((left, bottom + 6, right, bottom + 6 + layout.line_height))
                assert caption.convert("L").getextrema()[0] < 100, index
            else:  # the empty cells of the last row stay background
                assert sheet.crop((left, top, right, bottom)).getcolors(1) is not None
            if index % layout.columns < layout.columns - 1:  # the gap to the right
                gap = sheet.getpixel((right + gallery_sheet.GAP // 2, (top + bottom) // 2))
                assert gap == thumbnails.BACKGROUND


def test_sheet_jpeg_and_thumbnails_keep_aspect_and_orientation(store, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    # Stored 200x100 with a red top-left quarter; EXIF 6 means "rotate 90 clockwise":
    # shown 100x200 with the red quarter at the top right.
    rotated = make_exif_rotated_jpeg(photos / "rotated.jpg", orientation=6)
    wide = make_image(photos / "wide.png", size=(300, 100), seed=3)
    _classify(store, {rotated: _predictions((TABBY, 0.7)), wide: _predictions((PERSIAN, 0.6))})

    thumb = thumbnails.thumbnail(str(rotated), 128).image
    assert thumb.size == (64, 128)
    assert thumb.getpixel((48, 16))[0] > 200 and thumb.getpixel((16, 16))[2] > 200
    assert thumbnails.thumbnail(str(wide), 128).image.size == (128, 43)

    out = tmp_path / "sheet.jpg"
    result = gallery_sheet.render_sheet(_records(store, [rotated, wide]), out, columns=2, tile=128)
    with Image.open(out) as sheet:
        assert sheet.format == "JPEG" and sheet.size == _expected_size(2, 2, 128)
        left, top, right, bottom = result.layout.tile_box(0)
        # the portrait thumbnail is centred: the tile background shows on both sides
        side = sheet.getpixel((left + 8, (top + bottom) // 2))
        assert all(abs(a - b) < 12 for a, b in zip(side, thumbnails.TILE_BACKGROUND))


def test_phone_photo_thumbnail_uses_draft_decoding(tmp_path, monkeypatch):
    photo = make_phone_jpeg(tmp_path / "phone.jpg", orientation=6)
    decoded = decoded_sizes(monkeypatch)
    thumb = thumbnails.thumbnail(str(photo), 256)
    assert thumb.image.size == (192, 256)  # 4000x3000 shown upright: portrait
    # libjpeg decoded at 1/8 scale (500x375), not the 12 MP of the file
    assert decoded == [(500, 375)]


def _placeholder_files(store, tmp_path, monkeypatch):
    """A good image, one deleted after classification, one that cannot be
    read, and one whose bytes changed into text. Returns (paths, expected reasons)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    good = make_image(folder / "good.png", seed=1)
    gone = make_image(folder / "gone.png", seed=2)
    locked = make_image(folder / "locked.png", seed=3)
    broken = make_image(folder / "broken.png", seed=4)
    _classify(store, {p: _predictions((TABBY, 0.5)) for p in (good, gone, locked, broken)})
    gone.unlink()
    contents.mark_missing(store, [str(gone)])
    make_not_an_image(broken)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files: make open() answer as for a user
        real_open = thumbnails.open_regular

        def open_as_user(fp, *args, **kwargs):
            if os.fspath(fp) == canonical_path(locked):
                raise PermissionError(13, "Permission denied", os.fspath(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(thumbnails, "open_regular", open_as_user)
    reasons = {canonical_path(gone): "missing",
               canonical_path(locked): "cannot read: permission denied",
               canonical_path(broken): "not an image"}
    return [good, gone, locked, broken], reasons


def test_missing_and_unreadable_files_get_placeholder_tiles(store, tmp_path, monkeypatch):
    paths, reasons = _placeholder_files(store, tmp_path, monkeypatch)
    records = store.records_for_paths(canonical_path(p) for p in paths)
    assert [r.status for r in records] == ["done", "missing", "done", "done"]

    out = tmp_path / "sheet.png"
    result = gallery_sheet.render_sheet(records, out, columns=4, tile=128)
    assert result.count == 4
    assert dict(result.placeholders) == reasons
    with Image.open(out) as sheet:
        sheet = sheet.convert("RGB")
        for index, rec in enumerate(records):
            left, top, right, bottom = result.layout.tile_box(index)
            corner = sheet.getpixel((left + 4, top + 4))
            expected = thumbnails.PLACEHOLDER_BACKGROUND if rec.path in reasons else None
            if expected:
                assert corner == expected, rec.path
            else:
                assert corner != thumbnails.PLACEHOLDER_BACKGROUND

    page = tmp_path / "page.html"
    gallery.render_html(records, page, title="placeholders")
    parsed = _parse(page)
    assert [f["placeholder"] for f in parsed.figures] == [
        reasons.get(r.path) for r in records]


def test_a_sheet_too_large_is_refused_before_any_work(tmp_path):
    records = [ImageRecord(path=str(tmp_path / f"{i}.png"), sha256=None, status="pending")
               for i in range(200)]
    out = tmp_path / "tall.png"
    with pytest.raises(thumbnails.GalleryError, match="use more --columns or a smaller --limit"):
        gallery_sheet.render_sheet(records, out, columns=1)
    assert not out.exists()


# ---- HTML page ---------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects each <figure>: its labels, scores, name, tags, image src, placeholder."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.figures: list[dict] = []
        self.stack: list[str] = []
        self.field: str | None = None
        self.title = ""
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        cls = attrs.get("class", "")
        if tag == "figure":
            self.figures.append({"labels": [], "scores": [], "name": "", "tags": "", "href": None,
                                 "src": None, "placeholder": None, "search": attrs["data-search"]})
        elif tag == "img" and self.figures:
            self.figures[-1]["src"] = attrs["src"]
        elif tag == "a" and self.figures:
            self.figures[-1]["href"] = attrs["href"]
        elif tag == "script":
            self.scripts += 1
        field = {"label": "labels", "score": "scores", "name": "name", "tags": "tags",
                 "placeholder": "placeholder"}.get(cls)
        if tag == "title":
            field = "title"
        self.stack.append(field)

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        field = next((f for f in reversed(self.stack) if f), None)
        if field == "title":
            self.title += data
        elif field in ("labels", "scores"):
            self.figures[-1][field].append(data)
        elif field in ("name", "tags"):
            self.figures[-1][field] += data
        elif field == "placeholder":
            self.figures[-1]["placeholder"] = data


def _parse(page: Path) -> _Page:
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_html_page_has_a_figure_per_record_with_its_labels(store, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = {
        make_image(folder / "persian.png", seed=1): _predictions(
            (PERSIAN, 0.83), (TABBY, 0.11), (SIAMESE, 0.02)),
        make_image(folder / "dog.jpg", seed=2): _predictions((GOLDEN, 0.91), (BEAGLE, 0.04)),
        make_image(folder / "car.png", seed=3): _predictions((SPORTS_CAR, 0.66)),
    }
    _classify(store, files)
    tags.add_tags(store, str(folder / "dog.jpg"), ["vacation", "beach"])
    records = _records(store, files)

    page = tmp_path / "gallery.html"
    assert gallery.render_html(records, page, title="my pets") == 3
    text = page.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.title == "my pets" and parsed.scripts == 1
    assert [f["name"] for f in parsed.figures] == ["persian.png", "dog.jpg", "car.png"]
    assert [f["labels"] for f in parsed.figures] == [
        ["Persian cat", "tabby", "Siamese cat"], ["golden retriever", "beagle"], ["sports car"]]
    assert parsed.figures[0]["scores"] == ["83.0%", "11.0%", "2.0%"]
    assert parsed.figures[1]["tags"] == "tags: beach, vacation"
    assert "vacation" in parsed.figures[1]["search"] and "golden retriever" in parsed.figures[1]["search"]
    for fig in parsed.figures:  # every thumbnail is an embedded JPEG
        assert fig["src"].startswith("data:image/jpeg;base64,")
        with Image.open(BytesIO(base64.b64decode(fig["src"].split(",", 1)[1]))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= gallery.HTML_THUMB
    # works offline: nothing is fetched from anywhere
    for ref in ("http://", "https://", 'src="/', "src='/", "url(", "@import"):
        assert ref not in text
    assert "Content-Security-Policy" in text


def test_html_escapes_paths_and_tags(store, tmp_path):
    folder = tmp_path / 'odd <b>&"names\''
    folder.mkdir()
    path = make_image(folder / '<img src=x onerror=alert(1)>.png', seed=5)
    _classify(store, {path: _predictions((TABBY, 0.5))})
    tags.add_tags(store, str(path), ["<script>alert(2)</script>", 'a"b'])
    page = tmp_path / "gallery.html"
    gallery.render_html(_records(store, [path]), page, title="<title>&")
    text = page.read_text(encoding="utf-8")
    assert "<img src=x" not in text and "<script>alert" not in text and "<title>&<" not in text
    parsed = _parse(page)
    assert parsed.title == "<title>&"
    assert parsed.figures[0]["name"] == "<img src=x onerror=alert(1)>.png"
    assert parsed.figures[0]["tags"] == 'tags: <script>alert(2)</script>, a"b'


# ---- the command ------------------------------------------------------------------------


def _gallery(db_url: str, *args: str):
    """`labels --db DB gallery ARGS...`, which must succeed."""
    result = runner.invoke(app, ["--db", db_url, "gallery", *args])
    assert result.exit_code == 0, result.output
    return result


def test_cli_writes_a_png_and_an_html_page(store, db_url, tmp_path):
    _cats(store, tmp_path / "photos", 4)
    dog = make_image(tmp_path / "photos" / "dog.png", seed=9)
    _classify(store, {dog: _predictions((GOLDEN, 0.9))})

    out = tmp_path / "cats.png"
    result = _gallery(db_url, "cat", "-o", str(out), "--columns", "2")
    assert "wrote 4 image(s)" in result.stderr
    with Image.open(out) as sheet:
        assert sheet.size == _expected_size(4, 2, 256)

    page = tmp_path / "cats.html"
    _gallery(db_url, "cat", "-o", str(page), "--min-score", "0.8")
    names = [f["name"] for f in _parse(page).figures]
    assert names == ["cat0.png", "cat1.png", "cat2.png"]  # best first; 0.75 is cut


def test_cli_shows_what_labels_search_shows_under_the_floor(store, db_url, tmp_path):
    # Issue 26: one floor for every command that searches (query.find applies it).
    _cats(store, tmp_path / "photos", 2)
    unsure = make_image(tmp_path / "photos" / "unsure.png", seed=7)
    _classify(store, {unsure: _predictions((SPORTS_CAR, 0.6), (TABBY, 0.04))})
    page = tmp_path / "cats.html"
    result = _gallery(db_url, "cat", "-o", str(page))
    assert [f["name"] for f in _parse(page).figures] == ["cat0.png", "cat1.png"]
    assert "1 more image(s) match with a score below 10%" in result.stderr
    searched = runner.invoke(app, ["--db", db_url, "search", "cat", "--paths"])
    assert [os.path.basename(p) for p in searched.stdout.split()] == ["cat0.png", "cat1.png"]
    _gallery(db_url, "cat", "-o", str(page), "--min-score", "0")
    assert [f["name"] for f in _parse(page).figures] == ["cat0.png", "cat1.png", "unsure.png"]


def test_cli_cuts_at_the_limit_and_says_so(store, db_url, tmp_path):
    _cats(store, tmp_path / "photos", 5)
    out = tmp_path / "sheet.jpg"
    result = _gallery(db_url, "cat", "-o", str(out), "--limit", "3")
    assert "more than 3 images match; showing the best 3" in result.stderr
    with Image.open(out) as sheet:
        assert sheet.size == _expected_size(3, 5, 256)


def test_cli_empty_result_writes_an_empty_sheet_with_a_note(store, db_url, tmp_path):
    _cats(store, tmp_path / "photos", 2)
    out = tmp_path / "dogs.png"
    result = _gallery(db_url, "dog", "-o", str(out))
    assert "nothing matches 'dog'" in result.stderr
    with Image.open(out) as sheet:
        assert sheet.size == _expected_size(0, 5, 256)
        # the header carries the note: dark text in the second line
        assert sheet.convert("L").crop((0, 30, sheet.width, 60)).getextrema()[0] < 160

    page = tmp_path / "dogs.html"
    _gallery(db_url, "dog", "-o", str(page))
    assert _parse(page).figures == []
    assert "nothing matches" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["sheet.gif", "sheet", "sheet.pdf"])
def test_cli_unknown_suffix_is_a_usage_error(store, db_url, tmp_path, name):
    result = runner.invoke(app, ["--db", db_url, "gallery", "cat", "-o", str(tmp_path / name)])
    assert result.exit_code == 2
    assert "cannot tell the format" in result.stderr
    assert not (tmp_path / name).exists()


def test_cli_unwritable_output_is_one_line_and_exit_1(store, db_url, tmp_path):
    _cats(store, tmp_path / "photos", 1)
    out = tmp_path / "no-such-folder" / "sheet.png"
    result = runner.invoke(app, ["--db", db_url, "gallery", "cat", "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("labels: error: cannot write") and "Traceback" not in result.output


def test_gallery_has_help():
    result = runner.invoke(app, ["gallery", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for word in ("--limit", "--columns", "--min-score", "--tag", "--exact",
                 "--include-missing", ".html", "no further pages"):
        assert word in text


# ---- the page in a real browser ----------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is not installed, and CI is set (make test installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium, or make test-deps)")
    return found


def test_html_page_renders_in_headless_chromium(tmp_path):
    # Records built directly (the page needs no store; this test runs once, not per backend).
    chromium = _chromium()
    folder = tmp_path / "photos"
    folder.mkdir()
    records = [ImageRecord(path=str(make_image(folder / f"cat{i}.png", size=(160, 120), seed=i)),
                           sha256=f"{i:064x}", status="done", width=160, height=120,
                           labels=_predictions((PERSIAN, 0.9 - i / 10), (TABBY, 0.05)),
                           tags=["indoors"] if i % 2 else [])
               for i in range(4)]
    Path(records[0].path).unlink()  # one placeholder tile
    page = tmp_path / "gallery.html"
    gallery.render_html(records, page, title="labels gallery: cat")

    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    # not blank: many colours (the thumbnails' patterns), and the placeholder's red
    assert len(colours) > 500, f"screenshot looks blank ({len(colours)} colours)"
    assert any(rgb == thumbnails.PLACEHOLDER_BACKGROUND for _, rgb in colours)

    # The inline script runs under the page's Content-Security-Policy: it counts
    # the figures, and the filter from the URL's #fragment hides what does not match.
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--dump-dom", page.as_uri() + "#cat3"],
        capture_output=True, text=True, timeout=120)
    assert "1 of 4 shown" in proc.stdout, proc.stderr[-2000:]
    assert len(re.findall(r"<figure [^>]*\bhidden\b", proc.stdout)) == 3


def test_html_thumbnails_link_to_their_photos(store, tmp_path):
    folder = tmp_path / "my photos #1"
    folder.mkdir()
    photo = make_image(folder / "ünïcode name ✓.png", seed=4)
    gone = make_image(folder / "gone.png", seed=5)
    _classify(store, {photo: _predictions((TABBY, 0.5)), gone: _predictions((TABBY, 0.4))})
    records = _records(store, [photo, gone])
    gone.unlink()
    page = tmp_path / "gallery.html"
    gallery.render_html(records, page, title="links")
    shown, missing = _parse(page).figures
    assert shown["href"] == Path(canonical_path(photo)).as_uri()
    assert shown["href"].startswith("file:///") and "%23" in shown["href"]  # '#' escaped
    assert missing["href"] is None  # nothing to open


def _notdef_like(font, text: str) -> bool:
    """True when `font` draws `text` as the box it draws for a code point no font has."""
    def mask(t):
        return bytes(font.getmask(t))
    return mask(text) == mask("\U000F0000")


def test_the_sheet_font_draws_every_name(store, tmp_path):
    font = gallery_sheet.sheet_font(14)
    for text in ("ü", "ï", "✓", "Ж", "λ"):
        assert not _notdef_like(font, text), text
    photo = make_image(tmp_path / "ünïcode name ✓.png", seed=6)
    _classify(store, {photo: _predictions((TABBY, 0.5))})
    result = gallery_sheet.render_sheet(_records(store, [photo]), tmp_path / "sheet.png")
    assert result.count == 1 and not result.placeholders


def test_without_a_wide_font_the_sheet_says_so(monkeypatch, caplog):
    monkeypatch.setattr(gallery_sheet, "FONT_FILES", ("/nonexistent/font.ttf",))
    gallery_sheet.sheet_font.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            font = gallery_sheet.sheet_font(13)
    finally:
        gallery_sheet.sheet_font.cache_clear()
    assert font is not None
    assert "no wide-coverage font" in caplog.text and "fonts-dejavu-core" in caplog.text
