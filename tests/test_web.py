"""The web page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
enter the API key, search, see highlighted results with t.me links, load more results, ask, see
the streamed answer with numbered citations.  A screenshot is saved under test-artifacts/ (and
the pytest tmp dir).

Never runs ``playwright install``: it uses the system Chromium and skips without it.
"""

from __future__ import annotations

import json
import os
import re
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
            expect(page.locator("#channels input[type=checkbox]")).to_have_count(3)
            assert page.evaluate("localStorage.getItem('tgrag.apiKey')") == KEY

            page.fill("#q", "ключевая ставка банка")
            page.click("#search-btn")
            page.wait_for_selector("#results .result")
            first = page.locator("#results .result").first
            assert "Экономика за день" in first.inner_text()
            assert first.locator("a").get_attribute("href") == "https://t.me/econ_daily/1"
            assert first.locator("mark").count() >= 1
            assert first.locator(".tag").count() >= 1
            assert "Показано постов: 10" in page.inner_text("#search-status")
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


LINK_POST = {"id": 77, "channel_id": 1009, "channel": "@links_daily", "channel_title": "Ссылки дня",
             "date": "2024-05-20T10:00:00+00:00",
             "text": "Отчёт о гидрологии опубликован: https://example.org/report?id=7&lang=ru, "
                     "обсуждение в t.me/hydro_chat. Не ссылки: javascript:alert(1) и "
                     "<img src=x onerror=alert(2)> остаются текстом."}


def test_page_details_in_chromium(server: str) -> None:
    """Errors in Russian, and no stale "more" after one; the count says what is shown;
    channels are checkboxes; a tag click searches; sources named like hits; links in
    snippets clickable (http(s) and t.me only, escaped, rel=noopener)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    auth = {"Authorization": f"Bearer {KEY}"}
    body = json.dumps(LINK_POST, ensure_ascii=False).encode()
    job = httpx.post(server + "/ingest/export", headers=auth,
                     files={"file": ("links.jsonl", body)}, timeout=30).json()
    for _ in range(300):
        if httpx.get(server + f"/jobs/{job['job_id']}", headers=auth).json()["status"] == "done":
            break
        time.sleep(0.2)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            expect = sync_api.expect

            def search() -> None:  # and wait until it is shown (old results are still there)
                with page.expect_response(lambda r: r.url.endswith("/search")):
                    page.click("#search-btn")
                expect(page.locator("#search-btn")).to_be_enabled()  # disabled while it runs
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
            page.goto(server + "/")
            page.fill("#api-key", KEY)
            page.dispatch_event("#api-key", "change")
            boxes = page.locator("#channels input[type=checkbox]")
            expect(boxes).to_have_count(4)

            # The count says what is shown, and that there is more.
            page.fill("#q", "новости")
            search()
            expect(page.locator("#results .result")).to_have_count(10)
            status = page.inner_text("#search-status")
            assert "Показано постов: 10" in status and "есть ещё" in status, status
            assert page.is_visible("#more")

            # An error: Russian words, results and the stale "more" gone.
            page.fill("#since", "2024-05-10")
            page.fill("#until", "2024-05-01")
            search()
            expect(page.locator("#search-status.error")).to_be_visible()
            status = page.inner_text("#search-status")
            assert re.search("[а-яА-Я]{4}", status) and not re.search(r"\b(since|until|after)\b",
                                                                      status), status
            assert page.locator("#results .result").count() == 0
            assert page.is_hidden("#more")
            page.fill("#since", "")
            page.fill("#until", "")

            # Channels: two checkboxes, plain clicks (no Ctrl), both apply.
            page.locator("#channels label", has_text="Экономика за день").locator("input").check()
            page.locator("#channels label", has_text="Город и транспорт").locator("input").check()
            page.fill("#q", "новости")
            search()
            expect(page.locator("#results .result").first).to_be_visible()
            names = set(page.locator("#results .result .meta strong").all_inner_texts())
            assert names == {"Экономика за день", "Город и транспорт"}, names
            for label in ("Экономика за день", "Город и транспорт"):
                page.locator("#channels label", has_text=label).locator("input").uncheck()

            # A tag click searches with that tag.
            page.fill("#q", "ставка")
            search()
            tag = page.locator("#results .tag").first
            expect(tag).to_be_visible()
            wanted = tag.get_attribute("data-tag")
            with page.expect_response(lambda r: r.url.endswith("/search")):
                tag.click()
            expect(page.locator("#search-btn")).to_be_enabled()
            expect(page.locator("#tags")).to_have_value(wanted)
            expect(page.locator("#search-status")).to_contain_text("Показано постов")
            tags = [r.locator(".tag").all_inner_texts()
                    for r in page.locator("#results .result").all()]
            assert tags and all(f"#{wanted}" in t for t in tags), (wanted, tags)

            # Links in a snippet: clickable when http(s) or t.me, the rest stays text.
            page.fill("#tags", "")
            page.fill("#q", "отчёт о гидрологии")
            search()
            hit = page.locator("#results .result", has_text="Ссылки дня").first
            expect(hit).to_be_visible()
            links = hit.locator(".snippet a")
            hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
            assert hrefs == ["https://example.org/report?id=7&lang=ru",
                             "https://t.me/hydro_chat"], hrefs
            for i in range(links.count()):
                assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
                assert links.nth(i).get_attribute("target") == "_blank"
            assert hit.locator(".snippet img").count() == 0
            assert "javascript:alert(1)" in hit.locator(".snippet").inner_text()

            # Answer sources are named as search names hits (the title, not the username).
            page.fill("#ask-q", "Что решил Банк России по ключевой ставке?")
            page.click("#ask-btn")
            page.wait_for_selector("#sources li", timeout=60_000)
            first = page.locator("#sources li a").first.inner_text()
            assert first == "Экономика за день", first
            assert not errors, errors
        finally:
            browser.close()
