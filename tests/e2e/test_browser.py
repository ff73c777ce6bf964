"""The pages in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven
by Selenium against a real master and slave.

Nothing is downloaded at test time: the driver's path is given to Selenium's ``Service`` (so
Selenium Manager never runs) and the browser's to its options. Where Chromium or Selenium is missing
the test says so and skips, unless ``GOTO_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which makes that a
failure. On PyPy it always skips: Selenium needs Python 3.10 or later, and PyPy here is 3.9.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import GotoProcesses, free_tcp_port, poll_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Flags for a headless Chromium on a closed network (see ../shared/TWISTED-NOTES.md): no sandbox
#: (root in CI), no GPU, and none of the background traffic to outside hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
#: Seconds the browser gets for one page or one wait.
BROWSER_TIMEOUT = 15.0
#: Seconds for a click on the slave to reach the master's count (flushed once a second).
FLUSH_DEADLINE = 10.0


def _missing_browser() -> str | None:
    """Why the browser test cannot run here, or ``None`` when it can."""
    if platform.python_implementation() != "CPython":
        return None  # decided separately: PyPy always skips
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]' on CPython 3.10+)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium through chromedriver, with an empty profile of its own; quit at the end."""
    if platform.python_implementation() != "CPython":
        pytest.skip("the browser test runs on the CPython stage only (Selenium needs Python 3.10+)")
    missing = _missing_browser()
    if missing is not None:
        if os.environ.get("GOTO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GOTO_REQUIRE_BROWSER=1 but {missing}", pytrace=False)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="goto-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=360,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(BROWSER_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_person_shortens_follows_and_sees_the_click(
    browser: Any, goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """Type a URL into the form on a slave, submit, find the link on the result page, follow it, and
    see the info page's click count go from 0 to 1 (the click counted on the slave, flushed to the master)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    master = goto_processes("--rpc", data_file=tmp_path / "data.json")
    port = free_tcp_port()  # the slave's short links must lead back to it: --host names its real port
    slave = goto_processes(
        "--master",
        f"127.0.0.1:{master.port}",
        data_file=None,
        http=f"tcp:{port}:interface=127.0.0.1",
        host=f"127.0.0.1:{port}",
        name="slave",
    )
    target = f"{master.base_url}/_goto/health"  # somewhere real to land, on loopback
    wait = WebDriverWait(browser, BROWSER_TIMEOUT)

    browser.get(f"{slave.base_url}/")
    field = browser.find_element(By.ID, "url")
    assert browser.switch_to.active_element == field  # autofocus
    field.send_keys(target)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    short = wait.until(lambda driver: driver.find_element(By.ID, "short"))
    short_url = short.get_attribute("href")
    key = short_url.rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9A-Za-z]+", key), short_url
    assert browser.find_element(By.ID, "copy").is_displayed()  # the script ran under the CSP

    assert short_url == f"http://127.0.0.1:{port}/{key}"
    assert browser.find_element(By.CSS_SELECTOR, "img.qr").get_property("naturalWidth") > 0

    browser.find_element(By.ID, "info").click()
    wait.until(lambda driver: driver.current_url.endswith(f"/{key}+"))
    assert browser.find_element(By.ID, "clicks").text == "0"

    browser.find_element(By.ID, "short").click()  # follow the short link, as the person would
    wait.until(lambda driver: driver.current_url.startswith(master.base_url))

    def counted() -> bool | None:
        browser.get(f"{master.base_url}/{key}+")
        return True if browser.find_element(By.ID, "clicks").text == "1" else None

    poll_until(counted, FLUSH_DEADLINE, "the click on the master's info page")
    browser.get(f"{slave.base_url}/{key}+")
    assert browser.find_element(By.ID, "clicks").text == "1"  # the slave shows the master's count


def test_pages_with_the_longest_custom_key_fit_a_phone(
    browser: Any, goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A 64-character key without hyphens (review 34: the info page was 880 px wide, the 409 page 595)
    wraps on the result page, the info page and the error page of a 360 px window."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    master = goto_processes("--rpc", data_file=tmp_path / "data.json")
    key = "spring_launch_newsletter_" + "x" * 39
    assert len(key) == 64
    wait = WebDriverWait(browser, BROWSER_TIMEOUT)

    def submit(url: str) -> None:
        browser.get(f"{master.base_url}/")
        browser.find_element(By.ID, "url").send_keys(url)
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    def page_width() -> int:
        width: int = browser.execute_script("return document.documentElement.scrollWidth")
        return width

    # Headless Chromium's window is at least 500 px wide: a phone's screen is emulated instead.
    phone = {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    browser.get(f"{master.base_url}/")
    viewport = browser.execute_script("return window.innerWidth")
    assert viewport == 360, viewport
    submit("https://twisted.org/first")
    wait.until(lambda driver: driver.find_element(By.ID, "short"))
    assert page_width() <= viewport, "the result page"
    browser.get(f"{master.base_url}/{key}+")
    assert browser.find_element(By.TAG_NAME, "h1").text.endswith(key)
    assert page_width() <= viewport, "the info page"
    submit("https://twisted.org/second")  # the key is taken: the form again, with the error
    wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, ".error"))
    assert key in browser.find_element(By.CSS_SELECTOR, ".error").text
    assert page_width() <= viewport, "the error page"


def test_a_pasted_url_over_the_limit_is_refused_whole_not_cut(
    browser: Any, goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A person pastes a URL longer than the 4096 characters the server takes (audit B, stop 40: the
    URL field's ``maxlength`` cut it silently, and a link to the cut URL was made and shown as a
    success): the server's 400 page says why, holding the whole URL, its field marked and focused."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    master = goto_processes("--rpc", data_file=tmp_path / "data.json")
    pasted = "https://wide.example/" + "x" * 4099
    browser.get(f"{master.base_url}/")
    field = browser.find_element(By.ID, "url")
    browser.execute_script(  # a paste: a browser applies maxlength to it as to typing
        "arguments[0].focus(); document.execCommand('insertText', false, arguments[1]);", field, pasted
    )
    assert field.get_property("value") == pasted
    field.send_keys(Keys.ENTER)
    WebDriverWait(browser, BROWSER_TIMEOUT).until(lambda driver: driver.find_elements(By.ID, "error"))
    assert browser.find_elements(By.ID, "short") == []
    assert "4096" in browser.find_element(By.ID, "error").text
    field = browser.find_element(By.ID, "url")
    assert field.get_property("value") == pasted
    assert field.get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element == field


def test_a_taken_custom_key_is_announced_on_the_key_field(
    browser: Any, goto_processes: GotoProcesses, tmp_path: Path
) -> None:
    """A custom key already taken: the 409 page focuses the key field, marked invalid, and its
    accessible description (what a screen reader reads with it) is the reason and the hint."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    master = goto_processes("--rpc", data_file=tmp_path / "data.json")
    wait = WebDriverWait(browser, BROWSER_TIMEOUT)
    for url in ("https://twisted.org/one", "https://twisted.org/two"):
        browser.get(f"{master.base_url}/")
        browser.find_element(By.ID, "url").send_keys(url)
        browser.find_element(By.ID, "key").send_keys("launch")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(
            lambda driver: driver.find_elements(By.ID, "short") or driver.find_elements(By.ID, "error")
        )
    error = browser.find_element(By.ID, "error")
    assert "launch" in error.text and error.get_attribute("role") == "alert"
    key = browser.find_element(By.ID, "key")
    assert browser.switch_to.active_element == key
    assert key.get_attribute("aria-invalid") == "true"
    described = " ".join(
        browser.find_element(By.ID, part).text for part in key.get_attribute("aria-describedby").split()
    )
    assert error.text in described and "letters, digits" in described
    assert key.get_property("value") == "launch"
