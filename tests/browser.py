"""The Dagster UI as a user sees it: Debian's headless Chromium (``/usr/bin/chromium``, installed
by ``make test``) driven by Playwright for Python. Playwright's own browser download is not used:
it cannot reach its servers here, and the system browser is the one people have.

A failed wait leaves a screenshot and the page's text in ``screenshots`` for the CI log."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# As root in a sandbox, and with nothing reaching out to Google's hosts (the network is closed).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 60_000


class Browser:
    def __init__(self, page, screenshots: Path):
        self.page = page
        self.screenshots = screenshots
        self.shots = 0

    def open(self, path: str, wait_for: str) -> str:
        """Go to ``path`` of the UI, wait until ``wait_for`` is shown, and return the page's text."""
        page = self.page
        page.goto(path)
        try:
            page.get_by_text(wait_for).first.wait_for(timeout=TIMEOUT_MS)
        except Exception:
            self.shot(f"waiting for {wait_for!r} on {path}")
            raise
        self._dismiss_newsletter()
        return page.inner_text("body")

    def _dismiss_newsletter(self) -> None:
        # The UI's first-visit "Join the Dagster community" dialog covers the page.
        skip = self.page.get_by_role("button", name="Skip")
        if skip.count() and skip.first.is_visible():
            skip.first.click()

    def node_labels(self) -> list[str]:
        """The labels the lineage graph draws, one per asset node."""
        nodes = self.page.locator('[class*="AssetNode_assetName"]')
        nodes.first.wait_for(timeout=TIMEOUT_MS)
        return [t.strip() for t in nodes.all_inner_texts()]

    def shot(self, why: str) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        name = re.sub(r"[^A-Za-z0-9]+", "_", why)[:60]
        out = self.screenshots / f"{self.shots:02d}_{name}.png"
        self.page.screenshot(path=str(out), full_page=True)
        out.with_suffix(".txt").write_text(self.page.inner_text("body"))
        print(f"[browser] {why}: {out}")
        return out


@contextlib.contextmanager
def browser(base_url: str, screenshots: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package "
                           "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = b.new_page(base_url=base_url, viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            yield Browser(page, screenshots)
        finally:
            b.close()
