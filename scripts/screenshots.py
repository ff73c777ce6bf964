"""Take the README's screenshots (docs/*.png) of the form, result and info pages in headless Chromium.

Starts a master and a slave on 127.0.0.1 (temporary data file), shortens a link through the slave's
form, follows it twice, and saves each page at a phone's width (360 px). Needs Debian's chromium and
chromium-driver and Selenium (the test extra); nothing is downloaded.

Usage: ``.venv/bin/python scripts/screenshots.py [--out docs]``
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_goto/health", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args()
    twistd = Path(sys.executable).parent / "twistd"
    work = Path(tempfile.mkdtemp(prefix="goto-screenshots-"))
    master_port, slave_port = free_port(), free_port()
    common = [str(twistd), "-n", "--pidfile=", "goto", "--access-log", "none"]
    children = [
        subprocess.Popen(
            [*common, "--rpc", "--http", f"tcp:{master_port}:interface=127.0.0.1", "--file", str(work / "d.json")],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    driver = None
    try:
        wait_listening(master_port)
        children.append(
            subprocess.Popen(
                [*common, "--master", f"127.0.0.1:{master_port}", "--http", f"tcp:{slave_port}:interface=127.0.0.1",
                 "--host", f"127.0.0.1:{slave_port}"],
                cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        wait_listening(slave_port)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir={work / 'profile'}", "--window-size=360,640"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        # Headless windows are at least 500 px wide: emulate a 360 px phone screen instead.
        metrics = {"width": 360, "height": 640, "deviceScaleFactor": 1, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        wait = WebDriverWait(driver, 15)
        base = f"http://127.0.0.1:{slave_port}"
        args.out.mkdir(parents=True, exist_ok=True)
        driver.get(f"{base}/")
        driver.find_element(By.ID, "url").send_keys(
            "https://docs.twisted.org/en/stable/core/howto/defer.html"
        )
        driver.find_element(By.ID, "key").send_keys("deferreds")
        driver.save_screenshot(str(args.out / "form.png"))
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.ID, "short"))
        driver.save_screenshot(str(args.out / "result.png"))
        for _ in range(2):  # two people follow the link (not followed here: it leads off this machine)
            connection = http.client.HTTPConnection("127.0.0.1", slave_port, timeout=5)
            connection.request("GET", "/deferreds")
            assert connection.getresponse().status == 302
            connection.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            driver.get(f"{base}/deferreds+")
            if driver.find_element(By.ID, "clicks").text == "2":
                break
            time.sleep(0.3)
        driver.save_screenshot(str(args.out / "info.png"))
    finally:
        if driver is not None:
            driver.quit()
        for child in reversed(children):
            child.terminate()
            child.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    for name in ("form.png", "result.png", "info.png"):
        print(args.out / name, (args.out / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
