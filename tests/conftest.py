"""Shared fixtures: an isolated data folder and an opened index per test, and the shared data."""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.index import Index
from rag.settings import Settings
from tests.fake_gigachat import FakeGigaChat

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TGRAG_SHARED_DIR", REPO.parent / "shared")) / "data"
SAMPLE_EXPORT = REPO / "ingest" / "samples" / "telegram_export"
# The client address of in-process API tests: without API keys the app serves loopback only
# (TestClient's default "testclient" is no address at all).
LOCAL = ("127.0.0.1", 50000)


def loopback(app: Any) -> Any:
    """``app`` as reached from 127.0.0.1, for ASGI clients that cannot say where they connect
    from (schemathesis); the app itself stays reachable as ``.app``."""

    async def from_loopback(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "client": LOCAL}
        await app(scope, receive, send)

    from_loopback.app = app  # type: ignore[attr-defined]
    return from_loopback


def clear_tgrag_env(mp: pytest.MonkeyPatch) -> None:
    """Remove every TGRAG_* variable but the shared-data location (restored by ``mp``)."""
    for key in list(os.environ):
        if key.startswith("TGRAG_") and key != "TGRAG_SHARED_DIR":
            mp.delenv(key, raising=False)


def module_settings(tmp_path_factory: pytest.TempPathFactory, name: str,
                    **overrides: Any) -> Settings:
    """Settings over a fresh data folder for a module-scoped fixture.

    Module fixtures run outside the per-test ``_isolated_env``, so the developer's TGRAG_*
    variables and .env are kept away here, while the settings are read.
    """
    with pytest.MonkeyPatch.context() as mp:
        clear_tgrag_env(mp)
        return Settings(data_dir=tmp_path_factory.mktemp(name) / "data",
                        _env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def _default_signal_handlers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with Python's own Ctrl-C and SIGTERM handlers, and a test that leaves
    another one behind is named. The commands under test (``tgrag bot``, ``watch``) are stopped
    by a real SIGINT, which asyncio.run turns into a clean stop only while the default handler is
    installed: one leaked handler made every later such test wait for its timeout."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for sig, handler in wanted.items():
        signal.signal(sig, handler)
    yield
    for sig, handler in wanted.items():
        if signal.getsignal(sig) is not handler:
            warnings.warn(f"{request.node.nodeid} left a {sig.name} handler installed: "
                          f"{signal.getsignal(sig)!r}", stacklevel=1)
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's .env or TGRAG_* variables, or writes to ./data."""
    clear_tgrag_env(monkeypatch)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def index(settings: Settings) -> Iterator[Index]:
    idx = Index.open(settings, purpose="pytest")
    try:
        yield idx
    finally:
        idx.close()


@pytest.fixture
def quick_index(tmp_path: Path) -> Iterator[Index]:
    """An index whose sync locks expire after 0.6 s, so live retries come every 0.1 s."""
    settings = Settings(data_dir=tmp_path / "quick", sync_lock_ttl=0.6,
                        _env_file=None)  # type: ignore[call-arg]
    with Index.open(settings, purpose="pytest") as idx:
        yield idx


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED} (set TGRAG_SHARED_DIR); CI has it")
    return SHARED


@pytest.fixture
def news_dir(shared_data: Path) -> Path:
    path = shared_data / "telegram" / "nktkln_telegram_news" / "raw"
    if not path.is_dir():
        pytest.skip(f"needs {path}")
    return path


@pytest.fixture
def sample_export() -> Path:
    return SAMPLE_EXPORT


@pytest.fixture
def fake() -> Iterator[FakeGigaChat]:
    """A fake GigaChat server with the default replies (modules override it with their own)."""
    server = FakeGigaChat().start()
    try:
        yield server
    finally:
        server.stop()
