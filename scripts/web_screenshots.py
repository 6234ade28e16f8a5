"""Regenerate docs/serve-search.png and docs/serve-photo.png, the README's pictures of
`labels serve`: a small library of scikit-image's bundled photos (crops of its cat,
its coffee, rocket and motorcycle) with plausible labels, served by the real
`labels serve`, photographed by headless Chromium through Selenium. The photo page
shows a label confirmed and one taken back (judged after the search is taken).

    .venv/bin/python scripts/web_screenshots.py [--out docs]

Needs the test extras (scikit-image, selenium) and Debian's chromium and chromedriver.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import skimage
from PIL import Image, ImageEnhance, ImageOps

from labelsd import records
from labelsd.model.taxonomy import class_by_index
from labelsd.records import PhotoMeta, Prediction
from labelsd.store import contents, tags, workqueue
from labelsd.store.engine import open_store

DATA = Path(skimage.__file__).parent / "data"
TABBY, TIGER_CAT, EGYPTIAN, ESPRESSO, CUP, SHUTTLE, MISSILE, MOPED, SCOOTER = (
    281, 282, 285, 967, 968, 812, 657, 665, 670)


def _photos(folder: Path) -> dict[Path, tuple[list[tuple[int, float]], PhotoMeta | None]]:
    """Photos made from the bundled ones, each with the labels a model would give."""
    cat = Image.open(DATA / "chelsea.png").convert("RGB")
    w, h = cat.size
    made = {
        "IMG_2041.jpg": (cat, [(TABBY, 0.62), (TIGER_CAT, 0.21), (EGYPTIAN, 0.09)]),
        "IMG_2042.jpg": (cat.crop((60, 0, 360, 300)), [(TABBY, 0.71), (TIGER_CAT, 0.16), (EGYPTIAN, 0.07)]),
        "IMG_2043.jpg": (ImageOps.mirror(cat), [(TIGER_CAT, 0.48), (TABBY, 0.39), (EGYPTIAN, 0.05)]),
        "IMG_2044.jpg": (ImageEnhance.Color(cat).enhance(0.2), [(TABBY, 0.55), (EGYPTIAN, 0.22), (TIGER_CAT, 0.12)]),
        "IMG_2045.jpg": (cat.crop((120, 20, w, h)).resize((w, h)),
                         [(EGYPTIAN, 0.44), (TABBY, 0.31), (TIGER_CAT, 0.14)]),
        "IMG_2046.jpg": (ImageEnhance.Brightness(ImageOps.mirror(cat)).enhance(1.25),
                         [(TABBY, 0.58), (TIGER_CAT, 0.25), (EGYPTIAN, 0.08)]),
        "coffee.jpg": (Image.open(DATA / "coffee.png").convert("RGB"), [(ESPRESSO, 0.81), (CUP, 0.12)]),
        "rocket.jpg": (Image.open(DATA / "rocket.jpg").convert("RGB"), [(SHUTTLE, 0.66), (MISSILE, 0.27)]),
        "moto.jpg": (Image.open(DATA / "motorcycle_left.png").convert("RGB"), [(MOPED, 0.52), (SCOOTER, 0.30)]),
    }
    meta = PhotoMeta(taken_at="2024-07-14T15:30:00", camera="FUJIFILM X-T30",
                     gps_lat=48.8566667, gps_lon=2.3508333)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (img, labels) in made.items():
        path = folder / name
        img.save(path, "JPEG", quality=92)
        out[path] = (labels, meta if name == "IMG_2041.jpg" else None)
    return out


def build(root: Path) -> tuple[Path, Path]:
    db = root / "labels.db"
    photos = _photos(root / "Pictures")
    store = open_store(str(db))
    workqueue.enqueue(store, [str(p) for p in photos])
    outcomes = []
    for claim in workqueue.claim(store, "screenshots", len(photos)):
        data = Path(claim.path).read_bytes()
        labels, meta = photos[Path(claim.path)]
        with Image.open(claim.path) as img:
            size = img.size
        outcomes.append(records.Outcome(
            claim=claim, kind=records.OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), mtime_ns=os.stat(claim.path).st_mtime_ns, width=size[0], height=size[1],
            format="JPEG", model="InceptionV3/a7074984", meta=meta,
            predictions=[Prediction(rank=r, label=class_by_index(i).label, wnid=class_by_index(i).wnid,
                                    class_index=i, score=s) for r, (i, s) in enumerate(labels, 1)]))
    contents.record_outcomes(store, "screenshots", outcomes)
    tags.add_tags(store, str(root / "Pictures" / "IMG_2041.jpg"), ["Chelsea", "garden", "summer 2024"])
    tags.add_tags(store, str(root / "Pictures" / "IMG_2043.jpg"), ["Chelsea"])
    store.close()
    config = root / "config.toml"
    config.write_text(f'db = "{db}"\nwatch = ["{root / "Pictures"}"]\n')
    return config, root / "Pictures" / "IMG_2041.jpg"


def judge(root: Path, photo: Path) -> None:
    """What a person said of the photo's labels on its page: tabby is right, Egyptian cat wrong."""
    from labelsd.store import judgements

    store = open_store(str(root / "labels.db"))
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    judgements.confirm(store, [sha], TABBY, source="web")
    judgements.reject(store, [sha], EGYPTIAN, source="web")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="labels-shots-") as tmp:
        root = Path(tmp)
        config, first = build(root)
        sha = hashlib.sha256(first.read_bytes()).hexdigest()
        env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache"), "HOME": str(root)}
        server = subprocess.Popen([str(Path(sys.executable).with_name("labels")), "--config", str(config),
                                   "serve", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
        url = re.search(r"http://\S+", server.stdout.readline()).group(0)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync",
                     "--hide-scrollbars", "--force-device-scale-factor=1",
                     f"--user-data-dir={root / 'profile'}", "--window-size=1200,760"):
            options.add_argument(flag)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            for name, page in (("serve-search.png", "search?q=cat"),
                               ("serve-photo.png", f"photo/{sha}?back=%2Fsearch%3Fq%3Dcat")):
                if name == "serve-photo.png":
                    judge(root, first)
                browser.get(url + page)
                deadline = time.monotonic() + 30
                while not browser.execute_script(
                        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{page}: the pictures did not load")
                    time.sleep(0.1)
                shot = root / name
                browser.save_screenshot(str(shot))
                # Small for the README: 256 colours (the screenshot is flat colour and photos).
                with Image.open(shot) as img:
                    img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
                        Path(args.out) / name, optimize=True)
                print(f"{Path(args.out) / name}: {(Path(args.out) / name).stat().st_size // 1024} KiB")
        finally:
            browser.quit()
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
