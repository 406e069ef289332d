"""The start of a process: what importing the CLI and the app costs, and the backends started
before the imports (``rag.backend_start``: the data folder taken, the embedded Redis loading)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag.backend_start import start_backends
from rag.errors import BackendUnavailable, DataDirLocked
from rag.index import Index
from rag.settings import Settings
from tests.conftest import REPO

CLOSED = "127.0.0.1:1"


def test_the_cli_imports_no_llamaindex_and_the_app_no_telethon() -> None:
    # Importing LlamaIndex takes seconds and Telethon ~0.5 s: `tgrag serve` starts the backends
    # before the first, and a server without a bot or a Telegram account never needs the second.
    probe = (
        "import json, sys\n"
        "tops = lambda: {m.split('.')[0] for m in sys.modules}\n"
        "heavy = lambda: sorted(tops() & {'llama_index', 'telethon'})\n"
        "from api.cli import main\n"
        "cli = heavy()\n"
        "import api.app\n"
        "print(json.dumps([cli, heavy()]))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    cli, app = json.loads(out.splitlines()[-1])
    assert cli == []
    assert app == ["llama_index"]


def test_an_index_opens_over_the_backends_started_first(settings: Settings) -> None:
    started = start_backends(settings, "tgrag serve")
    server = started.redis_server
    assert server is not None and server.alive
    # The folder is taken from the first step on, in the name of the command that took it.
    with pytest.raises(DataDirLocked) as err:
        start_backends(settings, "tgrag ingest")
    assert "tgrag serve" in err.value.message
    index = Index.open(settings, started=started)
    try:
        assert index.lock is started.lock
        index.redis.set("k", "v")
        assert index.redis.get("k") == b"v"
        assert index.stats()["posts"] == 0
    finally:
        index.close()
    assert not server.alive
    Index.open(settings).close()  # released: the next open takes it


def test_abandoning_the_start_stops_redis_and_frees_the_folder(settings: Settings) -> None:
    started = start_backends(settings, "tgrag serve")
    server = started.redis_server
    assert server is not None
    started.abandon()
    started.abandon()  # idempotent
    assert not server.alive
    with Index.open(settings) as index:
        assert index.redis.ping()


def test_an_open_that_fails_after_the_start_releases_it(settings: Settings) -> None:
    broken = settings.model_copy(update={"qdrant_url": f"http://{CLOSED}"})
    started = start_backends(broken, "tgrag serve")
    server = started.redis_server
    assert server is not None
    with pytest.raises(BackendUnavailable) as err:
        Index.open(broken, started=started)
    assert f"http://{CLOSED}" in err.value.message
    assert not server.alive
    Index.open(settings).close()
