"""The web chat page of `ringan serve` in a real headless Chromium (selenium with Debian's chromium-driver; skipped
when either is absent): type a message, send it, watch the reply stream in. With `RINGAN_SCREENSHOT=1` the test
saves the page to `docs/serve.png`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from serve_helpers import running

from ringan.base_model import base_model_path
from ringan.loading import load_model

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=900,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_sends_a_message_and_streams_the_reply(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with running(*load_model(base_model_path())) as (url, server):
            browser.get(url + "/")
            topic = browser.find_element(By.ID, "topic")
            topic.clear()
            topic.send_keys("Liburan ke Bali")
            browser.find_element(By.ID, "user").clear()
            browser.find_element(By.ID, "user").send_keys("Budi")
            for text in ("Halo! Kita jadi liburan ke Bali bulan depan?", "Oke, kita naik apa ke sana?"):
                browser.find_element(By.ID, "message").send_keys(text)
                browser.find_element(By.ID, "send").click()
                WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "send").is_enabled())
            turns = browser.find_elements(By.CSS_SELECTOR, "#log .turn")
            assert [t.find_element(By.TAG_NAME, "b").text for t in turns] == ["Budi:", "Ringan:"] * 2
            replies = [t.find_element(By.TAG_NAME, "span").text for t in turns[1::2]]
            assert all(replies), replies
            # each reply arrived in pieces (one per token or so), not at once
            chunks = [int(t.find_element(By.TAG_NAME, "span").get_attribute("data-chunks")) for t in turns[1::2]]
            assert all(n >= 2 for n in chunks) or any(len(r.split()) < 2 for r in replies), (chunks, replies)
            assert browser.find_element(By.ID, "status").text == ""
            assert "Topik: Liburan ke Bali" in browser.find_element(By.CSS_SELECTOR, "#log .topic").text
            # the second message continued the first exchange's saved state
            assert server.metrics.value("ringan_state_cache_hits_total") >= 1
            if os.environ.get("RINGAN_SCREENSHOT"):
                browser.save_screenshot(str(SCREENSHOT))
            browser.find_element(By.ID, "new").click()
            assert browser.find_elements(By.CSS_SELECTOR, "#log .turn") == []
    finally:
        torch.set_num_threads(threads)
