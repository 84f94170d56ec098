"""A real Chromium driven by Playwright, for pages the server serves.

Debian's ``chromium`` package is installed on first use when ``/usr/bin/chromium`` is missing
(``apt-get``, as root); Playwright's own browser downloads are not used. Anything missing that
cannot be installed fails the tests loudly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APT_PACKAGES = ["chromium", "chromium-driver"]
INSTALL_LOCK = "/tmp/spacesync-chromium-install.lock"
REPO = Path(__file__).resolve().parents[2]


def _apt(*args: str) -> None:
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=600", *args]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed with exit code {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
            pytrace=False,
        )


def ensure_chromium() -> str:
    """The path of Debian's Chromium, installing the package if it is not there yet."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} is missing and cannot be installed here (needs apt-get as root): "
            f"install the Debian packages {' '.join(APT_PACKAGES)}",
            pytrace=False,
        )
    # Several test runs may start at once: one installs, the others wait for it.
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.access(CHROMIUM, os.X_OK):
            _apt("update")
            _apt("install", "-y", "--no-install-recommends", *APT_PACKAGES)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{' '.join(APT_PACKAGES)} installed, but {CHROMIUM} is missing", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``SPACESYNC_TEST_ARTIFACTS``, else ``test-artifacts/`` in the repo."""
    folder = Path(os.environ.get("SPACESYNC_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
