"""Headless Chromium helpers for the report tests (tests skip when chromium is absent)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Written by the page once loaded: each image's decoded width (0 = failed to decode).
IMAGE_PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute("
               "'data-image-widths', Array.from(document.images).map(i => i.naturalWidth).join(',')));"
               "</script>")


def chromium(*args: str, timeout: int = 60) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    return done.stdout


def dump_dom_with_probe(page: Path) -> str:
    probed = page.with_name(page.stem + "-probed.html")
    probed.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    return chromium("--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri())


def screenshot(page: Path, out: Path, size: str = "1200,2000") -> Path:
    chromium(f"--screenshot={out}", f"--window-size={size}", "--hide-scrollbars", page.resolve().as_uri())
    return out
