"""The review pages in a real headless browser: Debian's chromium driven by Selenium through Debian's
chromedriver (no browser download: both come from apt, tests/setup/apt-hotline.txt)."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(profile):
    """A headless chromium with its own profile folder; the caller quits it. Set SE_OFFLINE=true
    first (monkeypatch): Selenium Manager must never fetch anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromedriver are not installed: run tests/setup/install.sh")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--user-data-dir=%s" % profile,
              "--window-size=1500,1000", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def click_through(drv, element, timeout=30):
    """Click a button or link and wait until the page it leads to has replaced this one (a click
    returns before the form's answer arrives; a password check takes a moment)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    page = drv.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(drv, timeout).until(EC.staleness_of(page))


def log_in(drv, name, password):
    """Fill in the log-in form that ``drv`` shows and send it."""
    from selenium.webdriver.common.by import By
    field = drv.find_element(By.ID, "name")
    field.clear()
    field.send_keys(name)
    drv.find_element(By.ID, "password").send_keys(password)
    click_through(drv, drv.find_element(By.ID, "login"))
