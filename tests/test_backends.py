"""Index.open fails fast and clearly, before writing anything, when a backend is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag.embeddings import EmbeddingBackend, build_embedding
from rag.errors import BackendUnavailable, DataDirLocked, ModelMismatch
from rag.index import Index
from rag.redis_backend import open_redis
from rag.settings import Settings
from rag.store.edge import read_meta

CLOSED = "127.0.0.1:1"


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", _env_file=None, **kw)  # type: ignore[call-arg]


def qdrant_collections(settings: Settings) -> list[str]:
    """Collections the embedded engine holds in the data folder."""
    if not settings.edge_path.exists():
        return []
    return sorted(p.name for p in settings.edge_path.iterdir() if read_meta(p) is not None)


def test_redis_url_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_REDIS_URL", f"redis://{CLOSED}/0")
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == f"redis://{CLOSED}/0"
    with pytest.raises(BackendUnavailable) as err:
        Index.open(settings)
    assert not isinstance(err.value, DataDirLocked)
    assert f"redis://{CLOSED}/0" in err.value.message
    assert err.value.hint and "TGRAG_REDIS_URL" in err.value.hint
    assert qdrant_collections(settings) == []
    # The failed open released the data-folder lock.
    monkeypatch.delenv("TGRAG_REDIS_URL")
    Index.open(settings_for(tmp_path)).close()
    assert qdrant_collections(settings) == ["tgrag_posts"]


def test_redis_url_password_is_not_echoed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, redis_url=f"redis://:s3cret@{CLOSED}/0")
    with pytest.raises(BackendUnavailable) as err:
        open_redis(settings)
    assert "s3cret" not in str(err.value)
    assert f"redis://:***@{CLOSED}/0" in err.value.message


def test_qdrant_url_unreachable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, qdrant_url=f"http://{CLOSED}")
    with pytest.raises(BackendUnavailable) as err:
        Index.open(settings)
    assert f"http://{CLOSED}" in err.value.message
    assert err.value.hint and "TGRAG_QDRANT_URL" in err.value.hint
    # Redis (embedded here) was only pinged: nothing written.
    redis = open_redis(settings)
    assert redis.dbsize() == 0


def test_data_dir_locked_names_the_owner(settings: Settings) -> None:
    first = Index.open(settings, purpose="tgrag serve")
    try:
        with pytest.raises(DataDirLocked) as err:
            Index.open(settings, purpose="pytest")
        assert str(os.getpid()) in err.value.message
        assert "tgrag serve" in err.value.message
        assert err.value.hint
    finally:
        first.close()
    Index.open(settings).close()  # released on close


class _Renamed:
    """A real embedding backend under another name/dim, without loading another model."""

    @staticmethod
    def of(base: EmbeddingBackend, name: str, dim: int | None = None) -> EmbeddingBackend:
        return EmbeddingBackend(model=base.model, name=name, dim=dim or base.dim,
                                max_tokens=base.max_tokens, count_tokens=base.count_tokens)


@pytest.mark.parametrize("name, dim", [("other/model", None), (None, 768)])
def test_model_mismatch(settings: Settings, name: str | None, dim: int | None) -> None:
    emb = build_embedding(settings)
    Index.open(settings, embedding=emb).close()
    other = _Renamed.of(emb, name or emb.name, dim)
    with pytest.raises(ModelMismatch) as err:
        Index.open(settings, embedding=other)
    assert emb.name in err.value.message and str(emb.dim) in err.value.message
    assert err.value.hint and "TGRAG_EMBED_MODEL" in err.value.hint
    # The refused open let go of Qdrant local and the lock: the right model opens at once.
    again = Index.open(settings, embedding=emb)
    try:
        assert again.store.count() == 0
    finally:
        again.close()
