"""`labels serve` in a real browser: Debian's headless Chromium driven through its
chromedriver by Selenium (both paths given, so nothing is ever downloaded), against
the real server process. Every thumbnail renders, a photo opens, a tag added
and a label rejected through the forms are what `labels search` then finds, the
keyboard moves through the results and takes a rejection back, the page fits a
phone, "more like this" and the duplicates render their thumbnails and take the
keyboard, and the Content-Security-Policy blocks nothing the pages do."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from typer.testing import CliRunner

from labels_cli.app import app as cli
from labelsd.web.params import PER_PAGE
from webkit import ServeProcess, serve_env
from weblib import HOSTILE_FILE, add_vectors, open_library

BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-dev-shm-usage")
DEADLINE_S = 30


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = " and ".join(name for name, found in (("chromium", chromium), ("chromedriver", driver))
                           if not found)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing} not installed, and CI is set (make test installs them)")
    pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver, or make test-deps)")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    lib = open_library(tmp_path_factory.mktemp("web-browser"), cats=PER_PAGE + 5)
    add_vectors(lib)  # for "more like this" and the duplicates
    return lib


@pytest.fixture(scope="module")
def server(lib, tmp_path_factory):
    home = tmp_path_factory.mktemp("web-browser-home")
    with ServeProcess("--config", str(lib.config), "serve", "--port", "0", env=serve_env(home)) as s:
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


def wait_until(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")
        time.sleep(0.05)


def load(browser, url: str) -> None:
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", url)


def active(browser):
    return browser.execute_script("return document.activeElement")


def thumbnails_rendered(browser) -> list[int]:
    """Scroll to the end (lazy images load), then each grid image's naturalWidth once
    every one has finished loading."""
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait_until(lambda: browser.execute_script(
        "return Array.from(document.querySelectorAll('#results img')).every(i => i.complete)"),
        "every thumbnail to load")
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#results img')).map(i => i.naturalWidth)")


def problems_logged(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]]


def tiles(browser) -> int:
    return browser.execute_script("return document.querySelectorAll('#results .tile').length")


def test_a_search_renders_every_thumbnail(browser, server, lib, tmp_path):
    load(browser, server.url + "search?q=cat")
    assert tiles(browser) == PER_PAGE
    # scrolled to the end, the next page joins the grid (app.js), and then no more link
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait_until(lambda: tiles(browser) == PER_PAGE + 5, "the second page to load")
    assert browser.execute_script("return document.getElementById('more')") is None
    assert browser.find_element("id", "shown-to").text == str(PER_PAGE + 5)
    widths = thumbnails_rendered(browser)
    assert len(widths) == PER_PAGE + 5 and all(w > 0 for w in widths), widths
    shas = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results [data-sha256]')).map(e => e.dataset.sha256)")
    assert shas == [lib.sha(p) for p in lib.cats]
    browser.save_screenshot(str(tmp_path / "search.png"))
    assert (tmp_path / "search.png").stat().st_size > 10_000
    assert problems_logged(browser) == []


def test_open_a_photo_and_tag_it_and_labels_search_agrees(browser, server, lib, tmp_path):
    from selenium.webdriver.common.by import By

    load(browser, server.url + "search?q=dog")
    browser.find_element(By.CSS_SELECTOR, f'#results [data-sha256="{lib.sha(lib.dog)}"] a').click()
    wait_until(lambda: "/photo/" in browser.current_url, "the photo page")
    assert browser.find_element(By.CSS_SELECTOR, "h1.name").text == HOSTILE_FILE
    picture = browser.find_element(By.CSS_SELECTOR, ".picture img")
    wait_until(lambda: picture.get_property("complete"), "the picture")
    assert picture.get_property("naturalWidth") == 300
    box = browser.find_element(By.ID, "new-tag")
    box.send_keys("Beach day")
    box.submit()
    wait_until(lambda: "Beach day" in [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".tag > a")],
               "the new tag on the page")
    browser.save_screenshot(str(tmp_path / "photo.png"))
    found = CliRunner().invoke(cli, ["--config", str(lib.config), "search", "beach", "--json"])
    assert [r["path"] for r in json.loads(found.stdout)] == [str(lib.dog)]
    # and away again, through its remove button
    browser.find_element(By.CSS_SELECTOR, 'button[aria-label="Remove the tag Beach day"]').click()
    wait_until(lambda: "Beach day" not in browser.page_source, "the tag to go")
    found = CliRunner().invoke(cli, ["--config", str(lib.config), "search", "beach", "--json"])
    assert json.loads(found.stdout) == []
    assert problems_logged(browser) == []


def search_paths(lib, *query: str) -> list[str]:
    found = CliRunner().invoke(cli, ["--config", str(lib.config), "search", *query, "--json"])
    assert found.exit_code == 0, found.output
    return [r["path"] for r in json.loads(found.stdout)]


def test_reject_a_label_through_the_form_and_labels_search_agrees(browser, server, lib, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sha = lib.sha(lib.dog)
    assert search_paths(lib, "golden retriever") == [str(lib.dog)]
    load(browser, server.url + f"photo/{sha}")
    browser.find_element(By.CSS_SELECTOR, 'button[aria-label="Reject the label golden retriever"]').click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".taken-back-list li"),
               "the label listed as taken back")
    assert browser.current_url.endswith(f"/photo/{sha}#labels")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".label-name")] == ["beagle"]
    assert browser.find_element(By.CSS_SELECTOR, ".rejected-name").text == "golden retriever"
    browser.save_screenshot(str(tmp_path / "rejected.png"))
    assert (tmp_path / "rejected.png").stat().st_size > 10_000
    assert search_paths(lib, "golden retriever") == []
    assert search_paths(lib, "dog") == [str(lib.dog)]  # its beagle still finds it
    # back with the keyboard: from #labels, Tab goes through the labels to the Undo
    for _ in range(4):  # beagle, its Confirm, its Reject, the Undo
        ActionChains(browser).send_keys(Keys.TAB).perform()
    assert active(browser).get_attribute("aria-label") == "Undo the rejection of golden retriever"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR, ".taken-back-list li"),
               "the rejection to be taken back")
    assert "golden retriever" in [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".label-name")]
    assert search_paths(lib, "golden retriever") == [str(lib.dog)]
    assert problems_logged(browser) == []


def test_the_keyboard_moves_through_the_results(browser, server, lib):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    load(browser, server.url + "search?q=cat")
    assert active(browser).get_attribute("id") == "q"  # the search box has the focus

    def press(key):
        ActionChains(browser).send_keys(key).perform()
        return active(browser)

    def tile_index(element) -> int:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#results .tile-link')).indexOf(arguments[0])",
            element)

    assert tile_index(press(Keys.ARROW_DOWN)) == 0
    assert tile_index(press(Keys.ARROW_RIGHT)) == 1
    per_row = browser.execute_script(
        "const t = Array.from(document.querySelectorAll('#results .tile'));"
        "return t.filter(e => e.offsetTop === t[0].offsetTop).length")
    assert 2 <= per_row < PER_PAGE
    assert tile_index(press(Keys.ARROW_DOWN)) == 1 + per_row
    assert tile_index(press(Keys.ARROW_LEFT)) == per_row
    assert tile_index(press(Keys.ARROW_UP)) == 0
    assert press(Keys.ARROW_UP).get_attribute("id") == "q"
    press(Keys.ARROW_DOWN)
    press(Keys.ARROW_RIGHT)
    press(Keys.ENTER)
    wait_until(lambda: browser.current_url.endswith(f"/photo/{lib.sha(lib.cats[1])}?back=%2Fsearch%3Fq%3Dcat"),
               "the second photo to open")
    press(Keys.ESCAPE)  # back to the results
    wait_until(lambda: browser.current_url.endswith("/search?q=cat"), "the results again")
    press("/")
    assert active(browser).get_attribute("id") == "q"


def test_a_phone_sized_screen(browser, server, lib, tmp_path):
    browser.set_window_size(390, 844)
    try:
        for url in ("search?q=cat", f"photo/{lib.sha(lib.car)}", f"photo/{lib.sha(lib.dog)}", "labels",
                    "status", "tags", "search?q=dgo", "duplicates", f"photo/{lib.sha(lib.dog)}/similar"):
            load(browser, server.url + url)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{url} is wider than the screen by {overflow}px"
        load(browser, server.url + "search?q=cat")
        assert all(w > 0 for w in thumbnails_rendered(browser))
        per_row = browser.execute_script(
            "const t = Array.from(document.querySelectorAll('#results .tile'));"
            "return t.filter(e => e.offsetTop === t[0].offsetTop).length")
        assert per_row >= 3  # small tiles, not one photo a screen
        browser.save_screenshot(str(tmp_path / "phone.png"))
    finally:
        browser.set_window_size(1280, 900)


def grid_images(browser, grid: str) -> list[int]:
    """Each image's naturalWidth in the grid `grid` (a CSS selector), once all have loaded."""
    wait_until(lambda: browser.execute_script(
        f"const i = document.querySelectorAll('{grid} img'); "
        "return i.length > 0 && Array.from(i).every(e => e.complete)"), f"the thumbnails of {grid}")
    return browser.execute_script(
        f"return Array.from(document.querySelectorAll('{grid} img')).map(i => i.naturalWidth)")


def test_more_like_this_renders_its_thumbnails_and_takes_the_keyboard(browser, server, lib, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sha = lib.sha(lib.cats[0])
    load(browser, server.url + f"photo/{sha}")
    # loaded after the page (app.js): the link that stood there is replaced by the grid
    browser.execute_script("document.getElementById('similar').scrollIntoView()")
    widths = grid_images(browser, "#similar-grid")
    assert len(widths) == 12 and all(w > 0 for w in widths), widths
    shas = browser.execute_script(
        "return Array.from(document.querySelectorAll('#similar-grid [data-sha256]')).map(e => e.dataset.sha256)")
    assert shas[0] == lib.sha(lib.cats[1]) and sha not in shas and len(set(shas)) == 12
    scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#similar-grid .similarity")]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.95
    browser.save_screenshot(str(tmp_path / "similar.png"))
    assert (tmp_path / "similar.png").stat().st_size > 10_000
    # the arrow keys move through it as through the results; Enter opens; Esc comes back
    browser.execute_script("document.querySelector('#similar-grid .tile-link').focus()")
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert active(browser).get_attribute("href").endswith(f"/photo/{shas[1]}?back=%2Fphoto%2F{sha}")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(lambda: f"/photo/{shas[1]}" in browser.current_url, "the similar photo to open")
    assert browser.find_element(By.ID, "back").text == "← Back to the photo"
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait_until(lambda: browser.current_url.endswith(f"/photo/{sha}"), "the first photo again")
    assert problems_logged(browser) == []


def test_the_duplicates_page_refreshes_until_done_and_renders_its_groups(browser, server, lib, tmp_path):
    from selenium.webdriver.common.by import By

    load(browser, server.url + "duplicates")
    # the comparison runs in the server; the page looks again by itself until it is done
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".dup-group"), "the groups of duplicates")
    widths = grid_images(browser, ".dup-grid")
    assert widths and all(w > 0 for w in widths), widths
    first_group = browser.execute_script(
        "return Array.from(document.querySelectorAll('.dup-group')[0].querySelectorAll('[data-sha256]'))"
        ".map(e => e.dataset.sha256)")
    assert {lib.sha(lib.cats[0]), lib.sha(lib.cats[1])} <= set(first_group)
    assert browser.find_element(By.CSS_SELECTOR, 'nav.sections a[aria-current="page"]').text == "Duplicates"
    browser.save_screenshot(str(tmp_path / "duplicates.png"))
    assert problems_logged(browser) == []
