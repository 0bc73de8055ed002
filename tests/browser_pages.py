"""Headless Chromium for the site's browser tests and its screenshots in docs/: Debian's `chromium`
driven by the Playwright package (Playwright's own browser download is not used).

    python3 tests/browser_pages.py SITE DOCS    screenshots of SITE's leaderboard, first model's gallery and
                                               side-by-side page into DOCS/site_*.png
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, List, Optional

CHROMIUM = os.environ.get("LST_FAST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@contextlib.contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class WatchedPage:
    """A page that keeps its console errors, failed requests and uncaught exceptions."""

    def __init__(self, chromium, width: int = 1280, height: int = 900) -> None:
        self.page = chromium.new_page(viewport={"width": width, "height": height})
        self.errors: List[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed {r.url}"))

    def open(self, path: Path) -> None:
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_load_state("load")


def screenshots(site: Path, docs: Path, chromium=None) -> List[Path]:
    """The leaderboard, the first model's gallery and the side-by-side page, as PNG files in docs (in
    `chromium`, a launched browser, or one launched here)."""
    site, docs = Path(site), Path(docs)
    shots = [("site_leaderboard.png", site / "index.html")]
    models = sorted((site / "models").iterdir())
    shots.append(("site_gallery.png", models[0] / "index.html"))
    if (site / "side-by-side.html").is_file():
        shots.append(("site_side_by_side.png", site / "side-by-side.html"))
    if chromium is None:
        with browser() as launched:
            return screenshots(site, docs, launched)
    written = []
    for name, page_path in shots:
        page = WatchedPage(chromium, 1280, 860)
        page.open(page_path)
        page.page.wait_for_timeout(300)
        path = docs / name
        page.page.screenshot(path=str(path))
        page.page.close()
        written.append(path)
    return written


if __name__ == "__main__":
    for shot in screenshots(Path(sys.argv[1]), Path(sys.argv[2])):
        print("wrote", shot)
