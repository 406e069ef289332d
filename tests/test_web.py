"""The web page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
enter the API key, search, see highlighted results with t.me links, load more results, ask, see
the streamed answer with numbered citations.  A screenshot is saved under test-artifacts/ (and
the pytest tmp dir).

Never runs ``playwright install``: it uses the system Chromium and skips without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.pipeline import PostPipeline
from rag.index import Index
from rag.settings import Settings
from tests.conftest import REPO
from tests.search_corpus import corpus

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY = "web-test-key"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                              "(apt-get install -y chromium; .ci/run does it)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn on 127.0.0.1 (a free port) over a 12-post index, auth on."""
    data_dir = tmp_path_factory.mktemp("web") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGRAG_")}
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("TGRAG_"):
                mp.delenv(key)
        settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
        with Index.open(settings, purpose="pytest web") as index:
            PostPipeline(index).ingest([p for p in corpus() if p.message_id <= 4])
    # Dense search: the QA score threshold (qa_min_score) is on the cosine scale.
    env.update(TGRAG_DATA_DIR=str(data_dir), TGRAG_API_KEYS=KEY, TGRAG_SYNC_INTERVAL="0",
               TGRAG_SEARCH_MODE="dense")
    port = free_port()
    log = (data_dir.parent / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port",
         str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"uvicorn exited: {(data_dir.parent / 'uvicorn.log').read_text()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_search_and_ask_in_chromium(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # The page runs under its own Content-Security-Policy: a violation is an error.
            page.on("console", lambda msg: errors.append(msg.text)
                    if "Content Security Policy" in msg.text else None)
            response = page.goto(server + "/")
            assert response is not None and "frame-ancestors 'none'" in (
                response.headers["content-security-policy"])
            # Auth is on: the facets fail until a key is entered.
            page.wait_for_selector("#search-status.error")
            page.fill("#api-key", KEY)
            page.dispatch_event("#api-key", "change")
            expect = sync_api.expect  # locators, not eval'd predicates: the page's CSP forbids eval
            expect(page.locator("#channels option")).to_have_count(3)
            assert page.evaluate("localStorage.getItem('tgrag.apiKey')") == KEY

            page.fill("#q", "ключевая ставка банка")
            page.click("#search-btn")
            page.wait_for_selector("#results .result")
            first = page.locator("#results .result").first
            assert "Экономика за день" in first.inner_text()
            assert first.locator("a").get_attribute("href") == "https://t.me/econ_daily/1"
            assert first.locator("mark").count() >= 1
            assert first.locator(".tag").count() >= 1
            assert "Найдено постов" in page.inner_text("#search-status")
            # Marks come from the server's highlights: the query's words, inflected.
            marks = first.locator("mark").all_inner_texts()
            assert {"ключевую", "ставку"} <= set(marks), marks

            # 12 posts, 10 per page (dense ranks them all): "more" fetches the last two.
            assert page.locator("#results .result").count() == 10
            assert page.is_visible("#more")
            page.click("#more")
            expect(page.locator("#results .result")).to_have_count(12)
            assert page.is_hidden("#more")

            page.fill("#ask-q", "Что решил Банк России по ключевой ставке?")
            page.click("#ask-btn")
            try:
                page.wait_for_selector("#sources li", timeout=60_000)
            except sync_api.TimeoutError:
                pytest.fail(f"no sources; status: {page.inner_text('#ask-status')!r}, "
                            f"answer: {page.inner_text('#answer')!r}, errors: {errors}")
            page.wait_for_selector("#answer sup a")
            assert page.locator("#answer sup a").first.get_attribute("href") == "#source-1"
            source = page.locator("#sources li").first
            assert source.get_attribute("id") == "source-1"
            assert source.locator("a").get_attribute("href").startswith("https://t.me/")
            assert "16%" in page.inner_text("#answer")

            for target in (tmp_path / "web.png", REPO / "test-artifacts" / "web.png"):
                target.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(target), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
