"""The demo in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, driven by selenium): generate an
image in both modes, carry it to the edit tab and edit it, carry the edit to the understanding tab and ask about it in
both modes, and check every result and its forwards/time line appears; then bad input shows as a message in the page.

Screenshots go to ``$HYPERBAGEL_SCREENSHOTS`` (default: the test's temporary folder); ``HYPERBAGEL_DEMO_CKPT`` serves
another model folder instead of the micro one. The README's picture is made with both set::

    HYPERBAGEL_DEMO_CKPT=runs/teacher HYPERBAGEL_SCREENSHOTS=docs/images pytest tests/serve/test_browser.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Debian's chromium and chromium-driver are not installed "
                                       "(scripts/setup.sh installs them: apt-get install chromium chromium-driver)")
WAIT = 90  # seconds, for any one thing to appear in the page
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,950")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HYPERBAGEL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a browser or driver to download
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, server):
    """The demo's page, loaded and ready."""
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait(browser, lambda d: d.find_elements(By.ID, "gen-run"), "the page to load")
    return browser


def wait(driver, condition, what: str):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {WAIT} s waiting for {what}") from None


def text_of(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def run_and_wait(driver, button: str, status: str, expect: str) -> str:
    """Click ``button``; return the status line once it shows ``expect`` (a new result or an error)."""
    from selenium.webdriver.common.by import By

    before = text_of(driver, status)
    driver.find_element(By.ID, button).click()
    return wait(driver, lambda d: (t := text_of(d, status)) != before and expect in t and t, f"{status}: {expect}")


def image_src(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return imgs[0].get_attribute("src") if imgs else ""


def type_into(driver, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea")
    box.clear()
    box.send_keys(text)


def test_generate_edit_and_ask_in_the_browser(page, shots):
    from selenium.webdriver.common.by import By

    d = page
    type_into(d, "gen-prompt", "a red circle left of a blue square")
    accelerated = d.find_element(By.CSS_SELECTOR, "#gen-mode input[value=accelerated]")
    if accelerated.is_enabled():  # a model folder with a distilled student: run both modes, read the speedup
        assert accelerated.is_selected(), "accelerated is the default when the model folder has a student"
        status = run_and_wait(d, "gen-run", "gen-status", "forwards")
        assert status.startswith("accelerated:"), status
        d.find_element(By.CSS_SELECTOR, "#gen-mode input[value=baseline]").click()
        status = run_and_wait(d, "gen-run", "gen-status", "last accelerated")
        assert status.startswith("baseline:") and "fewer forwards" in status and "faster" in status, status
    else:
        status = run_and_wait(d, "gen-run", "gen-status", "forwards")
        assert status.startswith("baseline:"), status
    assert "/gradio_api/file=" in image_src(d, "gen-image")
    d.save_screenshot(str(shots / "demo.png"))

    d.find_element(By.ID, "gen-to-edit").click()  # carries the image over and opens the edit tab
    wait(d, lambda d: image_src(d, "edit-input"), "the generated image in the edit tab")
    type_into(d, "edit-prompt", "make the background gray")
    status = run_and_wait(d, "edit-run", "edit-status", "forwards")
    assert status.split(":")[0] in ("accelerated", "baseline"), status
    assert "/gradio_api/file=" in image_src(d, "edit-image")
    d.save_screenshot(str(shots / "demo-edit.png"))

    d.find_element(By.ID, "edit-to-ask").click()
    wait(d, lambda d: image_src(d, "und-input"), "the edited image in the understanding tab")
    type_into(d, "und-prompt", "how many circles are there?")
    status = run_and_wait(d, "und-run", "und-status", "forwards")
    answer = d.find_element(By.CSS_SELECTOR, "#und-answer textarea").get_attribute("value")
    assert answer.strip(), (status, answer)
    if d.find_element(By.CSS_SELECTOR, "#und-mode input[value=accelerated]").is_enabled():  # a draft is loaded
        assert status.startswith("accelerated:"), status
        d.find_element(By.CSS_SELECTOR, "#und-mode input[value=baseline]").click()
        status = run_and_wait(d, "und-run", "und-status", "last accelerated")
        again = d.find_element(By.CSS_SELECTOR, "#und-answer textarea").get_attribute("value")
        assert status.startswith("baseline:") and again == answer, (status, answer, again)  # lossless
    else:
        assert status.startswith("baseline:"), status
    d.save_screenshot(str(shots / "demo-understand.png"))


def test_bad_input_in_the_browser(page, shots, tmp_path):
    from selenium.webdriver.common.by import By

    d = page
    d.find_elements(By.CSS_SELECTOR, "button[role=tab]")[0].click()
    type_into(d, "gen-prompt", "a pink elephant")
    status = run_and_wait(d, "gen-run", "gen-status", "Error")
    assert status == "Error: words outside the vocabulary: ['elephant', 'pink']", status

    d.find_elements(By.CSS_SELECTOR, "button[role=tab]")[2].click()
    (tmp_path / "notes.png").write_text("this is not an image")
    for button in d.find_elements(By.CSS_SELECTOR, "#und-input button[aria-label='Clear']"):
        button.click()
    d.find_element(By.CSS_SELECTOR, "#und-input input[type=file]").send_keys(str(tmp_path / "notes.png"))
    d.find_element(By.ID, "und-run").click()
    toast = wait(d, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".toast-message-text")
                               if "not an image file" in e.text], "the error message for a file that is not an image")
    assert toast == ["not an image file: notes.png"]
    assert "Traceback" not in d.find_element(By.TAG_NAME, "body").text
    d.save_screenshot(str(shots / "demo-error.png"))
