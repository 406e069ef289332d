"""The composition root (``api/services.py``) and the boundaries it draws:

* every ingest path gets THE pipeline: a post synced from Telegram is tagged exactly like the
  same post imported from an export (with the LLM tagger, over the fake GigaChat);
* evaluation ranks through the search users get: ``tgrag eval retrieval``'s runs are the
  rankings ``tgrag search`` returns (copies collapsed, long posts' chunks folded);
* every module imports alone in a fresh interpreter (no module depends on import order).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from api.services import Services
from eval.beir import load_beir
from eval.retrieval import index_dataset, rank_queries
from ingest.readers import read_paths
from rag.hybrid import MODES, FusionConfig
from rag.ids import doc_id
from rag.settings import Settings
from tests.conftest import LOCAL
from tests.fake_gigachat import CREDENTIALS, FakeGigaChat
from tests.fake_telegram import FakeChannel, FakeTelegram, new_client, run
from tests.search_corpus import CITY_TEXTS, ECON_TEXTS, LONG_POST

REPO = Path(__file__).resolve().parent.parent
CHANNEL_ID = 1500000001
TEXT = ("Роскосмос вывел на орбиту новый спутник связи «Экспресс»; он обеспечит интернетом "
        "северные регионы.")
LLM_TAGS = '["Спутник связи", "Роскосмос", "орбита"]'


@pytest.fixture
def gigachat() -> Iterator[FakeGigaChat]:
    server = FakeGigaChat(responder=lambda request: LLM_TAGS).start()
    try:
        yield server
    finally:
        server.stop()


def llm_settings(data_dir: Path, fake: FakeGigaChat) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, llm="gigachat", gigachat_credentials=CREDENTIALS,
        gigachat_base_url=fake.base_url, gigachat_auth_url=fake.auth_url,
        gigachat_verify_ssl=False, llm_retry_backoff=0,
    )


def tags_of(services: Services, document_id: str) -> tuple[list[str], str]:
    (chunk,) = services.index.store.chunks_of(document_id)
    return chunk.payload["tags"], chunk.payload["tag_source"]


def test_a_synced_post_is_tagged_like_the_same_post_from_an_export(
    tmp_path: Path, gigachat: FakeGigaChat
) -> None:
    telegram = FakeTelegram()
    channel = telegram.add(FakeChannel(CHANNEL_ID, "technews", "Тех новости"))
    message = channel.post(TEXT, age=timedelta(days=2))
    with Services.open(llm_settings(tmp_path / "synced", gigachat)) as services:
        sync = services.channel_sync(new_client(telegram))
        result = run(sync.sync_channel("technews"))
        assert result.status == "ok" and result.new == 1, result
        synced = tags_of(services, doc_id(CHANNEL_ID, 1))

    export = tmp_path / "export" / "result.json"
    export.parent.mkdir()
    export.write_text(json.dumps({
        "name": "Тех новости", "type": "public_channel", "id": CHANNEL_ID, "messages": [{
            "id": 1, "type": "message", "date": message.date.isoformat(),
            "date_unixtime": str(int(message.date.timestamp())), "from": "Тех новости",
            "from_id": f"channel{CHANNEL_ID}", "text": TEXT}],
    }, ensure_ascii=False), encoding="utf-8")
    with Services.open(llm_settings(tmp_path / "imported", gigachat)) as services:
        report = services.ingest(read_paths([export.parent]))
        assert report.new == 1, report.to_dict()
        imported = tags_of(services, doc_id(CHANNEL_ID, 1))

    assert synced == imported
    assert synced == (["спутник_связи", "роскосмос", "орбита"], "gigachat")
    assert gigachat.chat_calls == 2  # each index asked the LLM about its post once


def test_telegram_unreachable_is_the_same_error_in_the_cli_and_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from telethon import functions
    from typer.testing import CliRunner

    from api.app import create_app
    from api.cli import app as cli
    from ingest.telegram import connector
    from ingest.telegram.reader import make_client

    telegram = FakeTelegram(require_auth=True)
    telegram.add(FakeChannel(CHANNEL_ID, "technews", "Тех новости")).post(TEXT)
    env = {"TGRAG_DATA_DIR": str(tmp_path / "data"), "TGRAG_TG_API_ID": "1",
           "TGRAG_TG_API_HASH": "x", "TGRAG_TG_SESSION": telegram.login_session(),
           "TGRAG_SYNC_INTERVAL": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(connector, "new_client",
                        lambda s, **options: telegram.attach(make_client(s, **options)))
    down = ConnectionError("network is unreachable")

    telegram.fail_next = [(functions.users.GetUsersRequest, down)]
    result = CliRunner().invoke(cli, ["sync", "-c", "technews"])
    assert result.exit_code == 3, result.output
    cli_error = result.stderr.splitlines()[0]
    assert cli_error == "error: cannot connect to Telegram: network is unreachable"

    telegram.fail_next = [(functions.users.GetUsersRequest, down)]
    with TestClient(create_app(Settings(_env_file=None)), client=LOCAL) as http:  # type: ignore[call-arg]
        response = http.post("/sync", json={"channel": ["technews"]})
    assert response.status_code == 503, response.text
    problem = response.json()
    assert problem["type"] == "urn:tgrag:error:telegram-unavailable"
    assert f"error: {problem['detail']}" == cli_error


# -- one retrieval path ---------------------------------------------------------------------------


def write_beir(root: Path) -> Path:
    """A small BEIR set whose search needs what the product does: a repost (collapsed into its
    original) and a long post (several chunks, one hit)."""
    texts = ECON_TEXTS + CITY_TEXTS + [LONG_POST, ECON_TEXTS[0] + "\n\nПодписывайтесь на канал!"]
    corpus = [{"_id": f"d{n}", "text": text} for n, text in enumerate(texts, 1)]
    queries = [{"_id": "q1", "text": "ключевая ставка Банка России"},
               {"_id": "q2", "text": "новые станции метро"},
               {"_id": "q3", "text": "строительство новых линий метро и новые поезда"},
               {"_id": "q4", "text": "курс доллара"}]
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td9\t1\nq3\td17\t1\nq4\td3\t1\n"
    root.mkdir(parents=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                 encoding="utf-8")
    (root / "qrels.tsv").write_text(qrels, encoding="utf-8")
    return root


@pytest.mark.slow
def test_eval_retrieval_ranks_exactly_as_search(tmp_path: Path, settings: Settings) -> None:
    ds = load_beir(write_beir(tmp_path / "mini"))
    ids = list(ds.corpus)
    with index_dataset(ds, settings) as index:
        runs = rank_queries(index, ds, MODES, FusionConfig.from_settings(settings),
                            settings.collapse_duplicates)
        services = Services(index)
        collapsed_somewhere = False
        for qid, query in ds.queries.items():
            for mode in MODES:
                page = services.search(query, k=100, mode=mode)
                shown = [ids[int(hit.id.rsplit(":", 1)[1]) - 1] for hit in page]
                assert list(runs[mode][qid]) == shown, (qid, mode)
                collapsed_somewhere |= any(hit.copies for hit in page)
        assert collapsed_somewhere  # the repost was folded into its original, in both
        assert "d18" not in runs["sparse"]["q1"] and "d1" in runs["sparse"]["q1"]


# -- import order ---------------------------------------------------------------------------------


def project_modules() -> list[str]:
    names = []
    for package in ("rag", "ingest", "eval", "api"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = project_modules()
    assert "api.services" in modules and "rag.store.base" in modules

    def imports(module: str) -> tuple[str, int, str]:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        return module, done.returncode, done.stderr[-2000:]

    with ThreadPoolExecutor(4) as pool:
        failures = [(m, err) for m, rc, err in pool.map(imports, modules) if rc != 0]
    assert failures == []
