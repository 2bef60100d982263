"""The web chat in a real headless Chromium: commands typed, progress seen, media that loads."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WebUp

pytestmark = pytest.mark.timeout(240)

WAIT_S = 120.0
CHROMEDRIVER = "/usr/bin/chromedriver"
# No first-run chores, no network of its own: the browser talks only to the chat under test.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--autoplay-policy=no-user-gesture-required",
)


def _chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, or a skip that says what to install."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "browser test skipped: no Chromium here (apt-get install chromium chromium-driver)"
        )
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium with its own profile, driven through chromedriver."""
    chromium, chromedriver = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test skipped: selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _until(driver: Any, script: str, what: str, *args: Any) -> Any:
    """Poll a JavaScript expression until it returns something truthy."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
            lambda d: d.execute_script(script, *args)
        )
    except TimeoutException:
        log = driver.execute_script("return document.getElementById('log').innerText")
        raise AssertionError(f"timed out waiting for {what}; the chat shows:\n{log}") from None


def _type(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text, Keys.ENTER)


_LAST_CARD = """
const cards = document.querySelectorAll('#log .job');
const card = cards[cards.length - 1];
return card && card.dataset.job !== arguments[0] ? card.dataset.job : null;
"""


def test_the_page_makes_an_image_and_a_video(browser: Any, web_up: WebUp, tmp_path: Path) -> None:
    browser.get(web_up.url)
    _until(browser, "return document.getElementById('conn').textContent === 'connected'", "SSE")

    _type(browser, "/imagine a red fox --seed 7")
    job = _until(browser, _LAST_CARD, "the job card", "")
    card = f"document.querySelector('.job[data-job=\"{job}\"]')"
    _until(
        browser,
        f"const img = {card}.querySelector('img.result');"
        "return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0;",
        "the image to load",
    )
    seen = browser.execute_script(f"return {card}.dataset.seen")
    assert seen.split()[0] == "queued" and "running" in seen, seen
    assert int(browser.execute_script(f"return {card}.dataset.step")) > 0, "no progress shown"
    assert browser.execute_script(f"return {card}.dataset.status") == "delivered"
    params = browser.execute_script(f"return {card}.querySelector('.params').textContent")
    assert "a red fox" in params and "--seed 7" in params
    buttons = browser.execute_script(
        f"return [...{card}.querySelectorAll('.buttons button')].map(b => b.dataset.action)"
    )
    edges = ["zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down"]
    assert buttons == [
        *("upscale", "vary_subtle", "vary_strong", "reroll", "animate", *edges, "edit", "info")
    ]

    # Edit region: the page's editor on the result; painted with pointer events, submitted, an
    # /inpaint of the stored result comes back as a new card.
    browser.execute_script(f"{card}.querySelector('button[data-action=edit]').click()")
    _until(
        browser,
        "const c = document.querySelector('.rb-editor canvas');return c && c.width > 0;",
        "the editor's image",
    )
    browser.execute_script(
        """const c = document.querySelector('.rb-editor canvas'), r = c.getBoundingClientRect();
        const at = (x, y) => ({clientX: r.left + x * r.width, clientY: r.top + y * r.height,
                               bubbles: true, pointerId: 1});
        c.dispatchEvent(new PointerEvent('pointerdown', at(0.3, 0.3)));
        c.dispatchEvent(new PointerEvent('pointermove', at(0.6, 0.6)));
        c.dispatchEvent(new PointerEvent('pointerup', at(0.6, 0.6)));
        document.querySelector('.rb-editor .rb-prompt').value = 'a red door';
        document.querySelector('.rb-editor .rb-submit').click();"""
    )
    region = _until(browser, _LAST_CARD, "the Edit region card", job)
    region_card = f"document.querySelector('.job[data-job=\"{region}\"]')"
    _until(browser, f"return {region_card}.querySelector('img.result') !== null", "its result")
    assert "/inpaint" in browser.execute_script(
        f"return {region_card}.querySelector('.status').textContent"
    )
    assert browser.execute_script("return document.querySelector('.rb-editor') === null")

    # Two files picked at once: the picture, then its mask (white = change) → a region edit.
    from PIL import Image
    from selenium.webdriver.common.by import By

    picture, mask = tmp_path / "picture.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(picture)
    white = Image.new("L", (64, 64), 0)
    white.paste(255, (16, 16, 48, 48))
    white.save(mask)
    browser.find_element(By.ID, "file").send_keys(f"{picture}\n{mask}")
    assert "picture.png, mask.png" in browser.find_element(By.ID, "chip").text
    _type(browser, "/remix a red door")
    edit = _until(browser, _LAST_CARD, "the region edit's card", region)
    edit_card = f"document.querySelector('.job[data-job=\"{edit}\"]')"
    _until(browser, f"return {edit_card}.querySelector('img.result') !== null", "the edit")
    assert "/inpaint" in browser.execute_script(
        f"return {edit_card}.querySelector('.status').textContent"
    )

    # /describe: four suggestions, each with its button; 3 runs /imagine on the third.
    browser.find_element(By.ID, "file").send_keys(str(picture))
    _type(browser, "/describe")
    said = _until(browser, _LAST_CARD, "the describe card", edit)
    ideas = f"[...document.querySelectorAll('.job[data-job=\"{said}\"] .texts li')]"
    texts = _until(
        browser,
        f"const l = {ideas}; return l.length === 4 ? l.map(li => li.textContent) : null;",
        "four suggestions",
    )
    assert [t[0] for t in texts] == ["1", "2", "3", "4"], texts
    browser.execute_script(f"{ideas}[2].querySelector('button').click()")
    imagined = _until(browser, _LAST_CARD, "the /imagine of suggestion 3", said)
    shown = f"document.querySelector('.job[data-job=\"{imagined}\"]')"
    assert "/imagine" in _until(
        browser, f"return {shown}.querySelector('.status').textContent;", "its status"
    )
    assert texts[2][1:] in browser.execute_script(
        f"return {shown}.querySelector('.params').textContent"
    )

    _type(browser, "/video waves")
    video_job = _until(browser, _LAST_CARD, "the video card", imagined)
    video = f"document.querySelector('.job[data-job=\"{video_job}\"] video.result')"
    state = _until(
        browser,
        f"const v = {video};"
        "return v && v.readyState >= 2 && v.duration > 0 "
        "? {ready: v.readyState, duration: v.duration, error: v.error} : null;",
        "the video to be playable",
    )
    assert state["error"] is None and state["duration"] > 0
    _until(browser, f"const v = {video}; return v.currentTime > 0 && !v.paused;", "playback")

    _type(browser, "/imagine a fox --seed banana")
    error = _until(
        browser,
        "const e = [...document.querySelectorAll('#log .error')].pop();"
        "return e ? e.textContent : null;",
        "an inline error",
    )
    assert "--seed" in error and "whole number" in error

    tiles = browser.execute_script("return document.querySelectorAll('#gallery figure').length")
    assert tiles >= 2
    shot = tmp_path / "web-chat.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # A reload keeps the conversation: the page's id and the server's history bring it back.
    browser.refresh()
    _until(
        browser,
        f"const c = {card}; const img = c && c.querySelector('img.result');"
        "return img && img.complete && img.naturalWidth > 0;",
        "the image after a reload",
    )
    assert browser.execute_script(f"return {video} !== null")
