"""The web page's ``highlight()`` and ``renderHit()`` run in Node: server highlights →
``<mark>``, offsets in code points (an emoji before a match must not shift it), copies as
"также в: …", all text escaped.  Skips without ``node``; the whole page is tested in Chromium
by tests/test_web.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from rag.snippets import query_stems, snippet_with_highlights
from tests.conftest import REPO

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (apt-get install -y nodejs)")


def page_function(name: str) -> str:
    html = (REPO / "api" / "static" / "index.html").read_text(encoding="utf-8")
    match = re.search(rf"^function {name}\(.*?^}}$", html, flags=re.S | re.M)
    assert match, f"no function {name} in index.html"
    return match.group(0)


def run(functions: list[str], call: str, data: object) -> object:
    """``call`` (JavaScript over ``data``) with the page's ``functions`` defined, in Node."""
    script = "\n".join([
        *(page_function(name) for name in functions),
        "const data = JSON.parse(require('fs').readFileSync(0, 'utf8'));",
        f"console.log(JSON.stringify({call}));",
    ])
    out = subprocess.run([NODE, "-e", script], input=json.dumps(data), capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def highlight(cases: list[tuple[str, list[list[int]] | None]]) -> list[str]:
    return run(["escapeHtml", "linkSpans", "highlight"],  # type: ignore[return-value]
               "data.map(([text, spans]) => highlight(text, spans))", cases)


def test_marks_are_built_from_server_offsets_and_escaped() -> None:
    snippet, spans = snippet_with_highlights("🔥 Банк <b>& повысил ставку «до 16%»",
                                             query_stems("ставки банка"))
    assert [snippet[s:e] for s, e in spans] == ["Банк", "ставку"]
    got = highlight([
        (snippet, [list(s) for s in spans]),
        ("<script>x</script>", []),
        ("abc", None),
        ("abcdef", [[0, 2], [1, 3], [4, 99], [5, 5]]),  # overlapping, out of range, empty: skipped
    ])
    assert got == [
        "🔥 <mark>Банк</mark> &lt;b&gt;&amp; повысил <mark>ставку</mark> «до 16%»",
        "&lt;script&gt;x&lt;/script&gt;",
        "abc",
        "<mark>ab</mark>cdef",
    ]


def test_a_hit_lists_its_copies_escaped() -> None:
    hit = {"channel_title": "Раньше всех", "channel": "ranshe", "channel_id": 1,
           "date": "2024-11-22T08:00:00+00:00", "link": "https://t.me/ranshe/10", "score": 0.9,
           "snippet": "Запрет отменят", "highlights": [[0, 6]], "tags": ["бензин"],
           "copies": [{"channel_title": "Москва <с огоньком>", "channel": "msk", "channel_id": 2,
                       "id": "tg:2:20", "message_id": 20, "link": "https://t.me/msk/20?a=1&b=2",
                       "date": "2024-11-22T08:40:00+00:00"}]}
    functions = ["escapeHtml", "linkSpans", "highlight", "formatDate", "channelName", "renderHit"]
    html = run(functions, "renderHit(data)", hit)
    assert "<mark>Запрет</mark> отменят" in html
    assert '<p class="copies">также в: <a href="https://t.me/msk/20?a=1&amp;b=2"' in html
    assert "Москва &lt;с огоньком&gt;, " in html
    alone = run(functions, "renderHit(data)", {**hit, "copies": []})
    assert "также в" not in alone


def test_links_in_snippets_are_clickable_and_safe() -> None:
    """http(s) and t.me links become anchors (escaped, new tab, noopener); nothing else does,
    and a mark that covers part of a link stays inside it."""
    text = ("Отчёт: https://example.org/r?id=7&x=1, и t.me/hydro_chat. javascript:alert(1) "
            "<img src=x onerror=alert(2)> coolt.me/x https://q.ru/a\"onclick=x")
    (html,) = highlight([(text, [[0, 5], [10, 25]])])
    anchors = re.findall(r'<a href="([^"]*)" target="_blank" rel="noopener noreferrer">', html)
    assert anchors == ["https://example.org/r?id=7&amp;x=1", "https://t.me/hydro_chat",
                       "https://q.ru/a"]  # a quote ends a link
    assert html.count("</a>") == 3 and "<img" not in html and "&lt;img" in html
    assert "javascript:alert(1)" in html and 'href="javascript' not in html
    assert "coolt.me/x <a" in html  # not a t.me link
    assert "<mark>Отчёт</mark>" in html and "htt<mark>ps://example.or</mark>g" in html
