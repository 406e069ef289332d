"""Readers: Telegram Desktop exports, JSON/JSONL dumps, content detection, and bad input."""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ingest.documents import Post
from ingest.readers import (
    DumpReader,
    ExportReader,
    NotReadable,
    SkippedRecord,
    ZipExport,
    open_reader,
    read_paths,
)
from ingest.readers.base import ReadItem
from ingest.readers.markdown import strip_markdown
from rag.errors import InputError, NothingToRead

CHANNEL_ID = 1000724666
# 2024-12-04T09:00:28Z; the local-time "date" next to it is deliberately three hours off.
UNIX = 1733302828
LOCAL = "2024-12-04T12:00:28"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def split(items: list[ReadItem]) -> tuple[list[Post], list[SkippedRecord]]:
    posts = [i for i in items if isinstance(i, Post)]
    skipped = [i for i in items if isinstance(i, SkippedRecord)]
    assert len(posts) + len(skipped) == len(items)
    return posts, skipped


def message(mid: int, text: Any = "Текст", **extra: Any) -> dict[str, Any]:
    return {
        "id": mid, "type": "message", "date": LOCAL, "date_unixtime": str(UNIX + mid),
        "from": "Naked Science", "from_id": f"channel{CHANNEL_ID}", "text": text, **extra,
    }


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "Naked Science", "type": "public_channel", "id": CHANNEL_ID,
            "messages": messages, **extra}


def read_export(tmp_path: Path, data: Any, **kwargs: Any) -> tuple[list[Post], list[SkippedRecord]]:
    path = write_json(tmp_path / "export" / "result.json", data)
    return split(list(ExportReader(path, **kwargs).iter_posts()))


def read_dump(path: Path, **kwargs: Any) -> tuple[list[Post], list[SkippedRecord]]:
    return split(list(DumpReader(path, **kwargs).iter_posts()))


# --- Telegram Desktop exports --------------------------------------------------------------------


def test_single_chat_string_text(tmp_path: Path) -> None:
    posts, skipped = read_export(tmp_path, chat([message(7, "Учёные нашли кратер")]))
    assert skipped == []
    assert posts == [Post(
        channel_id=CHANNEL_ID, message_id=7, date=UNIX + 7, text="Учёные нашли кратер",
        channel="", channel_title="Naked Science",
    )]
    post = posts[0]
    assert post.doc_id == f"tg:{CHANNEL_ID}:7"
    assert post.link == f"https://t.me/c/{CHANNEL_ID}/7"
    # date_unixtime (UTC), never the exporter's local "date"
    assert post.date != 1733313628


def test_entity_list_text_is_flattened_and_links_kept(tmp_path: Path) -> None:
    text = [
        {"type": "bold", "text": "Кратер"}, " в Китае ",
        {"type": "hashtag", "text": "#наука"}, " ",
        {"type": "link", "text": "https://naked-science.ru/a"}, " и ",
        {"type": "text_link", "text": "статья", "href": "https://example.com/b"}, " ",
        {"type": "mention", "text": "@naked_science"}, " ",
        {"type": "link", "text": "https://naked-science.ru/a"},
    ]
    entities = [
        {"type": "plain", "text": " в Китае "},
        {"type": "text_link", "text": "статья", "href": "https://example.com/b"},
        {"type": "text_link", "text": "ещё", "href": "https://example.com/c"},
    ]
    posts, skipped = read_export(
        tmp_path, chat([message(8, text, text_entities=entities)])
    )
    assert skipped == []
    assert posts[0].text == (
        "Кратер в Китае #наука https://naked-science.ru/a и статья @naked_science "
        "https://naked-science.ru/a"
    )
    assert posts[0].links == [
        "https://naked-science.ru/a", "https://example.com/b", "https://example.com/c"
    ]


def test_service_messages_ignored_and_media_only_skipped(tmp_path: Path) -> None:
    service = {"id": 1, "type": "service", "date_unixtime": str(UNIX), "actor": "Naked Science",
               "action": "create_channel", "title": "Naked Science", "text": ""}
    photo = message(2, "", photo="photos/photo_1.jpg", width=800, height=600)
    sticker = message(3, [], media_type="sticker")
    messages = [service, photo, sticker, message(4, "Есть текст")]
    posts, skipped = read_export(tmp_path, chat(messages))
    assert [p.message_id for p in posts] == [4]
    assert [(s.record, s.reason) for s in skipped] == [
        ("message 2", "no text (media-only or empty post)"),
        ("message 3", "no text (media-only or empty post)"),
    ]
    assert all(s.source.endswith("result.json") for s in skipped)


def test_photo_caption_is_the_text(tmp_path: Path) -> None:
    posts, _ = read_export(tmp_path, chat([message(5, "Подпись", photo="photos/p.jpg")]))
    assert posts[0].text == "Подпись"


def test_edited_forwarded_and_reactions(tmp_path: Path) -> None:
    reactions = [
        {"type": "emoji", "count": 12, "emoji": "👍"},
        {"type": "emoji", "count": 3, "emoji": "🔥"},
        {"type": "custom_emoji", "count": 2, "document_id": "5368324170671202286"},
    ]
    msg = message(
        9, "Обновлено", edited="2024-12-04T13:00:00", edited_unixtime=str(UNIX + 3600),
        forwarded_from="РИА Новости", reactions=reactions,
    )
    posts, skipped = read_export(tmp_path, chat([msg]))
    assert skipped == []
    post = posts[0]
    assert post.edited == UNIX + 3600
    assert post.forwarded_from == "РИА Новости"
    assert post.reactions == {"👍": 12, "🔥": 3, "custom:5368324170671202286": 2}
    # the document hash ignores reactions and edit time, but keeps the forward source
    assert post.to_document().metadata["forwarded_from"] == "РИА Новости"


def test_date_falls_back_to_local_date_read_as_utc(tmp_path: Path) -> None:
    msg = message(10, "Старый экспорт")
    del msg["date_unixtime"]
    posts, _ = read_export(tmp_path, chat([msg]))
    assert posts[0].date == 1733313628  # 2024-12-04T12:00:28 taken as UTC


def test_chat_id_missing_falls_back_to_from_id(tmp_path: Path) -> None:
    data = chat([message(11, "Без id чата")])
    del data["id"]
    posts, _ = read_export(tmp_path, data)
    assert posts[0].channel_id == CHANNEL_ID
    assert posts[0].doc_id == f"tg:{CHANNEL_ID}:11"


def test_full_account_export_reads_channels_of_both_lists(tmp_path: Path) -> None:
    data = {
        "about": "Here is the data you requested.",
        "personal_information": {"first_name": "A"},
        "chats": {"about": "chats", "list": [
            {"name": "Мама", "type": "personal_chat", "id": 42, "messages": [message(1, "Привет")]},
            {"name": "Группа", "type": "private_supergroup", "id": 1500000001,
             "messages": [message(1, "Обсуждение")]},
            chat([message(1, "Пост один"), message(2, "Пост два")]),
            {"name": "Закрытый", "type": "private_channel", "id": 1999999999,
             "messages": [message(1, "Закрытый пост"), message(1, "Дубль")]},
        ]},
        "left_chats": {"about": "left", "list": [
            {"name": "Ушёл", "type": "public_channel", "id": -1001234567890,
             "messages": [message(5, "Старый пост")]},
        ]},
    }
    posts, skipped = read_export(tmp_path, data)
    assert [p.doc_id for p in posts] == [
        f"tg:{CHANNEL_ID}:1", f"tg:{CHANNEL_ID}:2", "tg:1999999999:1", "tg:1234567890:5",
    ]
    assert [p.channel_title for p in posts] == ["Naked Science"] * 2 + ["Закрытый", "Ушёл"]
    assert [(s.record, s.reason) for s in skipped] == [
        ("chat 1999999999 message 1", "duplicate message id 1 (first at item 1); kept the first"),
    ]


def test_non_channel_single_chat_export_is_one_file_skip(tmp_path: Path) -> None:
    data = {"name": "Мама", "type": "personal_chat", "id": 42, "messages": [message(1, "Привет")]}
    posts, skipped = read_export(tmp_path, data)
    assert posts == []
    assert len(skipped) == 1 and skipped[0].record == "file"
    assert "'personal_chat' is not a channel" in skipped[0].reason


def test_export_folder_and_channels_json_usernames(tmp_path: Path) -> None:
    folder = tmp_path / "ChatExport_2024-12-04"
    write_json(folder / "result.json", chat([message(3, "Пост")]))
    write_json(folder / "channels.json", {
        str(CHANNEL_ID): {"username": "naked_science", "title": "Naked Science"}
    })
    (folder / "files").mkdir()
    write_json(folder / "files" / "attachment.json", {"not": "a post"})  # media, never read
    for reader in (ExportReader(folder), open_reader(folder), open_reader(folder / "result.json")):
        assert isinstance(reader, ExportReader)
        posts, skipped = split(list(reader.iter_posts()))
        assert skipped == []
        assert posts[0].channel == "naked_science"
        assert posts[0].link == "https://t.me/naked_science/3"
    # the walk reads result.json only: channels.json and media files are not "not an export"
    posts, skipped = split(list(read_paths([tmp_path])))
    assert [p.doc_id for p in posts] == [f"tg:{CHANNEL_ID}:3"] and skipped == []


def test_export_without_usernames_links_to_t_me_c(tmp_path: Path) -> None:
    posts, _ = read_export(tmp_path, chat([message(3, "Пост")]))
    assert posts[0].channel == ""
    assert posts[0].link == f"https://t.me/c/{CHANNEL_ID}/3"


def test_export_bad_records(tmp_path: Path) -> None:
    no_id = message(1, "Нет id")
    del no_id["id"]
    no_date = message(2, "Нет даты")
    del no_date["date_unixtime"], no_date["date"]
    bad_date = message(3, "Плохая дата", date_unixtime="вчера")
    posts, skipped = read_export(tmp_path, chat([
        no_id, no_date, bad_date, message(4, "x" * 101), message(5, "Хороший"),
        message(5, "Дубль"), "not an object",
    ]), max_post_chars=100)
    assert [p.message_id for p in posts] == [5]
    assert posts[0].text == "Хороший"
    assert [(s.record, s.reason) for s in skipped] == [
        ("item 1", "message has no id"),
        ("message 2", "message has no date (no \"date_unixtime\" or \"date\")"),
        ("message 3", "bad date 'вчера': expected unix seconds"),
        ("message 4", "post is 101 characters, over the limit of 100 (TGRAG_MAX_POST_CHARS)"),
        ("message 5", "duplicate message id 5 (first at item 5); kept the first"),
        ("item 7", "not a JSON object"),
    ]


def test_export_loads_as_llamaindex_documents(tmp_path: Path) -> None:
    path = write_json(tmp_path / "result.json", chat([message(1, "Один"), message(2, "")]))
    docs = ExportReader(path).load_data()
    assert [d.id_ for d in docs] == [f"tg:{CHANNEL_ID}:1"]
    assert docs[0].metadata["link"] == f"https://t.me/c/{CHANNEL_ID}/1"


# --- JSON / JSONL dumps ---------------------------------------------------------------------------


def test_dump_array_with_markdown(tmp_path: Path) -> None:
    record = {
        "message_id": 11877, "sender_id": -1001000724666,
        "text": "🏢 **Вузы на Naked Science: **\n\n— В **НИУ ВШЭ** [выяснили](https://ns.ru/a), "
                "что __египтяне__ ~~не~~ боялись. Код: `x**2`\n\nhttps://ns.ru/b",
        "date": "2024-12-04T09:00:28+00:00", "channel": "Naked Science", "category": "science",
    }
    path = write_json(tmp_path / "posts.json", [record])
    posts, skipped = read_dump(path)
    assert skipped == []
    assert posts == [Post(
        channel_id=CHANNEL_ID, message_id=11877, date=UNIX,
        text="🏢 Вузы на Naked Science: \n\n— В НИУ ВШЭ выяснили, что египтяне не боялись. "
             "Код: x**2\n\nhttps://ns.ru/b",
        channel="", channel_title="Naked Science",
        links=["https://ns.ru/a", "https://ns.ru/b"],
    )]


def test_dump_messages_object_with_engagement_and_username(tmp_path: Path) -> None:
    record = {
        "id": 5, "channel_id": "1000724666", "channel": "@naked_science", "text": "Пост",
        "date": UNIX, "views": 1500, "forwards": 12, "reactions": {"👍": 7},
        "edit_date": "2024-12-04T10:00:28Z", "forwarded_from": "ТАСС", "grouped_id": 13,
    }
    path = write_json(tmp_path / "dump.json", {"channel": "x", "messages": [record]})
    assert isinstance(open_reader(path), DumpReader)
    posts, skipped = read_dump(path)
    assert skipped == []
    post = posts[0]
    assert (post.channel, post.channel_title, post.link) == (
        "naked_science", "", "https://t.me/naked_science/5"
    )
    assert (post.date, post.edited) == (UNIX, UNIX + 3600)
    assert (post.views, post.forwards, post.reactions) == (1500, 12, {"👍": 7})
    assert (post.forwarded_from, post.grouped_id) == ("ТАСС", 13)


def test_dump_telethon_to_dict_shape(tmp_path: Path) -> None:
    record = {
        "_": "Message", "id": 9, "peer_id": {"_": "PeerChannel", "channel_id": CHANNEL_ID},
        "date": "2024-12-04 09:00:28+00:00", "message": "Сырой **текст** https://x.ru/y",
        "reactions": {"_": "MessageReactions", "results": [
            {"_": "ReactionCount", "reaction": {"_": "ReactionEmoji", "emoticon": "❤"}, "count": 4},
        ]},
    }
    posts, skipped = read_dump(write_json(tmp_path / "telethon.json", [record]))
    assert skipped == []
    # "message" is Telethon's raw text: no markdown to strip
    assert posts[0].text == "Сырой **текст** https://x.ru/y"
    assert posts[0].links == ["https://x.ru/y"]
    assert posts[0].reactions == {"❤": 4}
    assert posts[0].date == UNIX


def test_dump_naive_iso_date_is_utc_and_unix_string(tmp_path: Path) -> None:
    records = [
        {"id": 1, "channel_id": CHANNEL_ID, "text": "a", "date": "2024-12-04T09:00:28"},
        {"id": 2, "channel_id": CHANNEL_ID, "text": "b", "date": str(UNIX)},
    ]
    posts, _ = read_dump(write_json(tmp_path / "d.json", records))
    assert [p.date for p in posts] == [UNIX, UNIX]


def test_dump_channel_id_from_file_name(tmp_path: Path) -> None:
    record = {"message_id": 1, "text": "Пост", "date": UNIX, "channel": "Naked Science"}
    posts, skipped = read_dump(write_json(tmp_path / "1001000724666_messages.json", [record]))
    assert skipped == [] and posts[0].doc_id == f"tg:{CHANNEL_ID}:1"
    path = write_json(tmp_path / "posts.json", [record])
    posts, skipped = read_dump(path)
    assert posts == []
    assert skipped == [SkippedRecord(
        str(path), "message 1",
        "no channel id (expected \"channel_id\", \"sender_id\" or \"peer_id\", "
        "or a file named <channel_id>_messages.json)",
    )]


def test_jsonl_malformed_line_skipped_others_read(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 1, "channel_id": CHANNEL_ID, "text": "Первый", "date": UNIX}),
        '{"id": 2, "channel_id": 1000724666, "text": "обрыв',
        "",
        json.dumps({"id": 3, "channel_id": CHANNEL_ID, "text": "Третий", "date": UNIX}),
        "[1, 2]",
    ]
    for name in ("posts.jsonl", "posts.json"):  # detected by content, not only by the suffix
        path = tmp_path / name
        path.write_text("\n".join(lines), encoding="utf-8")
        assert isinstance(open_reader(path), DumpReader)
        posts, skipped = split(list(read_paths([path])))
        assert [p.message_id for p in posts] == [1, 3]
        assert [(s.source, s.record) for s in skipped] == [
            (str(path), "line 2"), (str(path), "line 5")
        ]
        assert skipped[0].reason.startswith("malformed JSON: Unterminated string")
        assert skipped[1].reason == "not a JSON object but list"


def test_dump_bad_records(tmp_path: Path) -> None:
    base = {"channel_id": CHANNEL_ID, "date": UNIX}
    records = [
        {**base, "text": "Нет id"},
        {**base, "id": 2},
        {**base, "id": 3, "text": "   "},
        {"channel_id": CHANNEL_ID, "id": 4, "text": "Нет даты"},
        {**base, "id": 5, "text": "Плохая дата", "date": "4 декабря"},
        {**base, "id": 6, "text": "y" * 51},
        {**base, "id": 7, "text": "Хороший"},
        {**base, "id": 7, "text": "Дубль"},
        {**base, "id": "seven", "text": "Плохой id"},
        {**base, "id": 10, "text": "Плохой канал", "channel_id": "abc"},
    ]
    path = write_json(tmp_path / "bad.json", records)
    posts, skipped = read_dump(path, max_post_chars=50)
    assert [(p.message_id, p.text) for p in posts] == [(7, "Хороший")]
    assert [(s.record, s.reason) for s in skipped] == [
        ("item 1", "no message id (expected \"message_id\" or \"id\")"),
        ("message 2", "no text (media-only or empty post)"),
        ("message 3", "no text (media-only or empty post)"),
        ("message 4", "no date (expected \"date\": ISO 8601 or unix seconds)"),
        ("message 5", "bad date '4 декабря': expected an ISO 8601 string or unix seconds"),
        ("message 6", "post is 51 characters, over the limit of 50 (TGRAG_MAX_POST_CHARS)"),
        ("message 7", "duplicate message id 7 (first at item 7); kept the first"),
        ("item 9", "bad message id 'seven'"),
        ("message 10", "bad channel id 'abc' in \"channel_id\""),
    ]
    assert all(s.source == str(path) for s in skipped)
    assert str(skipped[0]) == f"{path}: item 1: no message id (expected \"message_id\" or \"id\")"


# --- bad files ------------------------------------------------------------------------------------


def test_malformed_json_file_is_one_file_skip_with_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n {"id": 1, "text": "a",\n  "date": }\n]', encoding="utf-8")
    good = write_json(tmp_path / "z_good.json", [
        {"id": 1, "channel_id": CHANNEL_ID, "text": "ok", "date": UNIX}
    ])
    posts, skipped = split(list(read_paths([tmp_path])))
    assert [p.doc_id for p in posts] == [f"tg:{CHANNEL_ID}:1"]
    assert skipped == [SkippedRecord(
        str(path), "file", "malformed JSON: Expecting value at line 3, column 11"
    )]
    with pytest.raises(NotReadable, match="line 3, column 11"):
        open_reader(path)
    # the readers used directly say the same thing
    assert list(DumpReader(path).iter_posts()) == skipped
    export = tmp_path / "export" / "result.json"
    export.parent.mkdir()
    export.write_text('{"name": "x", "messages": [', encoding="utf-8")
    (item,) = ExportReader(export).iter_posts()
    assert isinstance(item, SkippedRecord) and item.record == "file"
    assert item.reason.startswith("malformed JSON: Expecting value at line 1")
    assert good.exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"foo": 1, "bar": [1, 2]}', "a JSON object without \"messages\" (keys: bar, foo)"),
        ("[1, 2, 3]", "its items are not post objects"),
        ('"just a string"', "the top-level JSON value is str, not an array or object"),
        ("", "the file is empty"),
    ],
)
def test_not_an_export_is_a_file_skip_and_the_walk_goes_on(
    tmp_path: Path, content: str, why: str
) -> None:
    bad = tmp_path / "a_other.json"
    bad.write_text(content, encoding="utf-8")
    write_json(tmp_path / "b_posts.json", [{"id": 1, "channel_id": 5, "text": "ok", "date": UNIX}])
    posts, skipped = split(list(read_paths([tmp_path])))
    assert [p.doc_id for p in posts] == ["tg:5:1"]
    assert len(skipped) == 1
    assert (skipped[0].source, skipped[0].record) == (str(bad), "file")
    assert skipped[0].reason.startswith(f"not a Telegram export or JSON dump: {why}")
    assert "; expected a Telegram Desktop export" in skipped[0].reason


def test_plain_text_file_given_explicitly_is_a_file_skip(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("просто заметки\n", encoding="utf-8")
    items = []
    with pytest.raises(NothingToRead) as caught:
        items.extend(read_paths([path]))
    (item,) = items  # the file-level skip comes first, then the error: nothing was read
    assert isinstance(item, SkippedRecord) and item.record == "file"
    assert item.reason.startswith("malformed JSON: Expecting value at line 1, column 1")
    assert caught.value.problems == [(str(path), item.reason)]


def test_missing_path_raises_input_error_before_reading(tmp_path: Path) -> None:
    good = write_json(tmp_path / "ok.json", [{"id": 1, "channel_id": 5, "text": "a", "date": 1}])
    with pytest.raises(InputError) as caught:
        read_paths([good, tmp_path / "nope"])  # raises at the call, not mid-iteration
    assert "no such file or folder" in caught.value.message and "nope" in caught.value.message
    assert caught.value.hint and "export" in caught.value.hint
    with pytest.raises(InputError, match="no such file or folder"):
        open_reader(tmp_path / "nope.json")


def test_invalid_utf8_bytes_skip_only_the_damaged_records(tmp_path: Path) -> None:
    records = [
        {"id": 1, "channel_id": CHANNEL_ID, "text": "Хороший пост", "date": UNIX},
        {"id": 2, "channel_id": CHANNEL_ID, "text": "BROKEN", "date": UNIX},
        {"id": 3, "channel_id": CHANNEL_ID, "text": "Честный \ufffd символ", "date": UNIX},
    ]
    raw = json.dumps(records, ensure_ascii=False).encode("utf-8")
    raw = raw.replace(b"BROKEN", b"\xd0\xbf\xff\xfe \xd1\x82")  # "п", two bad bytes, " т"
    path = tmp_path / "bytes.json"
    path.write_bytes(raw)
    posts, skipped = split(list(read_paths([path])))
    # a U+FFFD the author typed is text; only bytes that failed to decode make a record unreadable
    assert [p.message_id for p in posts] == [1, 3]
    assert posts[1].text == "Честный \ufffd символ"
    assert skipped == [SkippedRecord(str(path), "message 2", "invalid UTF-8 bytes in text")]
    export = tmp_path / "exp" / "result.json"
    export.parent.mkdir()
    data = json.dumps(chat([message(1, "BROKEN"), message(2, "ок")]), ensure_ascii=False)
    export.write_bytes(data.encode("utf-8").replace(b"BROKEN", b"\xc3\x28"))
    posts, skipped = split(list(read_paths([export])))
    assert [p.message_id for p in posts] == [2]
    assert [(s.record, s.reason) for s in skipped] == [("message 1", "invalid UTF-8 bytes in text")]


def test_unpaired_surrogate_escape_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "escapes.json"
    path.write_text(
        '[{"id": 1, "channel_id": 5, "date": 1, "text": "half \\ud83d emoji"},'
        ' {"id": 2, "channel_id": 5, "date": 1, "text": "whole \\ud83d\\ude00"}]',
        encoding="utf-8",
    )
    posts, skipped = split(list(read_paths([path])))
    assert [p.text for p in posts] == ["whole \U0001f600"]
    assert [(s.record, s.reason) for s in skipped] == [(
        "message 1", "text contains unpaired UTF-16 surrogates (broken \\ud800-\\udfff escapes)"
    )]


def test_folder_without_result_json_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(NotReadable, match="a folder without result.json"):
        open_reader(tmp_path)
    with pytest.raises(InputError, match="no result.json here"):
        list(ExportReader(tmp_path).iter_posts())


def test_read_paths_walks_folders_in_sorted_order(tmp_path: Path) -> None:
    def post(mid: int) -> dict[str, Any]:
        return {"id": mid, "channel_id": 5, "text": f"п{mid}", "date": UNIX}

    write_json(tmp_path / "b" / "2.json", [post(3)])
    write_json(tmp_path / "a.json", [post(1), post(2)])
    (tmp_path / "c.jsonl").write_text(json.dumps(post(4)) + "\n", encoding="utf-8")
    write_json(tmp_path / "d" / "result.json", chat([message(5, "экспорт")]))
    write_json(tmp_path / ".hidden" / "x.json", [post(99)])
    (tmp_path / "readme.md").write_text("# not read", encoding="utf-8")
    ids = [item.doc_id for item in read_paths([tmp_path]) if isinstance(item, Post)]
    assert ids == ["tg:5:1", "tg:5:2", "tg:5:3", "tg:5:4", f"tg:{CHANNEL_ID}:5"]
    assert [i.doc_id for i in read_paths([tmp_path / "a.json"]) if isinstance(i, Post)] == ids[:2]


# --- Telegram markdown ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "text", "links"),
    [
        ("**жирный** и __курсив__", "жирный и курсив", []),
        ('**"Как в а**е сейчас"**', '"Как в а**е сейчас"', []),  # a censored word keeps its stars
        ("Я е**л", "Я е**л", []),
        ("**обрезанный", "обрезанный", []),
        ("```def f(**kwargs): pass```", "def f(**kwargs): pass", []),
        ("[Lead [SRE]](https://t.pr/x) **[жирная ссылка](https://a.ru/(b))**",
         "Lead [SRE] жирная ссылка", ["https://t.pr/x", "https://a.ru/(b)"]),
        ("[Имя](tg://user?id=1) см. https://a.ru/x, и (https://b.ru/y).",
         "Имя см. https://a.ru/x, и (https://b.ru/y).", ["https://a.ru/x", "https://b.ru/y"]),
        ("**https://a.ru/q__w**", "https://a.ru/q__w", ["https://a.ru/q__w"]),
    ],
)
def test_strip_markdown(markdown: str, text: str, links: list[str]) -> None:
    assert strip_markdown(markdown) == (text, links)


# --- real data ------------------------------------------------------------------------------------

# Bold markup left behind would open or close a word: "**слово" or "слово**". A word-internal "**"
# ("е**л") is the author's censorship, not markup.
_BOLD_LEFT = re.compile(r"(^|\s)\*\*\S|\S\*\*(\s|$)")


def test_news_dataset_imports_as_is(news_dir: Path) -> None:
    files = sorted(news_dir.glob("*.json"))
    assert len(files) == 24
    posts, skipped = split(list(read_paths([news_dir])))
    assert len(posts) + len(skipped) == 22099
    assert len(posts) >= 22000, [str(s) for s in skipped[:10]]
    by_channel = Counter(p.channel_id for p in posts)
    assert len(by_channel) == 24
    assert by_channel[1000724666] == 967  # 1001000724666_messages.json
    assert {f"{100}{cid}_messages.json" for cid in by_channel} == {f.name for f in files}
    assert {p.channel_title for p in posts if p.channel_id == 1000724666} == {"Naked Science"}
    assert all(p.doc_id == f"tg:{p.channel_id}:{p.message_id}" for p in posts)
    assert all(not _BOLD_LEFT.search(p.text) for p in posts)
    # "[T any](v …)" survives only in Go code (code is literal); no [text](http…) link is left
    assert not any(re.search(r"\]\(https?://", p.text) for p in posts)
    assert sum(1 for p in posts if p.links) > 14000
    first = next(p for p in posts if p.channel_id == 1000724666 and p.message_id == 11877)
    assert first.date == UNIX and first.link == f"https://t.me/c/{CHANNEL_ID}/11877"


def test_sample_export(sample_export: Path) -> None:
    result = sample_export / "result.json"
    if not result.is_file():
        pytest.skip(f"no sample export at {result} yet")
    reader = open_reader(sample_export)
    assert isinstance(reader, ExportReader)
    posts, skipped = split(list(reader.iter_posts()))
    assert len(posts) >= 150
    assert len({p.channel_id for p in posts}) >= 4
    assert any(p.links for p in posts)
    assert any(p.edited for p in posts)
    assert any(p.forwarded_from for p in posts)
    assert any("#" in p.text for p in posts)
    assert len({p.doc_id for p in posts}) == len(posts)
    assert all(p.channel_title for p in posts)
    assert len(skipped) <= len(posts) // 10, [str(s) for s in skipped]
    assert all(s.reason == "no text (media-only or empty post)" for s in skipped)
    # channels.json beside result.json supplies the usernames
    assert all(p.channel and p.link == f"https://t.me/{p.channel}/{p.message_id}" for p in posts)


# --- values no index can hold (issue: one bad date failed the whole upload) -----------------------

INT64_MAX = 2**63 - 1
# Dates past 9999-12-31T23:59:59Z (253402300799), or not numbers at all: each one used to raise
# ValueError/OverflowError out of the reader or, later, out of the pipeline, losing the whole file.
IMPOSSIBLE_DATES = [253402300800, "253402300800", 1e15, float("inf"), float("nan"), 10**30,
                    "9" * 5000, -1e300]


def test_export_impossible_dates_skip_only_their_record(tmp_path: Path) -> None:
    messages = [message(1, "Хороший первый")]
    messages += [message(10 + n, "Плохая дата", date_unixtime=value)
                 for n, value in enumerate(IMPOSSIBLE_DATES)]
    messages += [message(2, "Правка с плохим временем", edited_unixtime=float("inf")),
                 message(3, "Правка за 9999 годом", edited_unixtime="253402300800"),
                 message(4, "Хороший последний")]
    posts, skipped = read_export(tmp_path, chat(messages))
    assert [p.message_id for p in posts] == [1, 2, 3, 4]
    # A broken edit time costs the post only its edit time, as any other unreadable edit time.
    assert [p.edited for p in posts] == [None, None, None, None]
    dated = [f"message {10 + n}" for n in range(len(IMPOSSIBLE_DATES))]
    assert [s.record for s in skipped] == dated
    assert all(s.reason.startswith("bad date ") for s in skipped), skipped
    assert all(len(s.reason) < 120 for s in skipped)  # a 5000-digit value is not echoed whole
    for post in posts:  # every kept post becomes a document (the pipeline's date_iso)
        post.to_document()


def test_dump_impossible_dates_and_ids_skip_only_their_record(tmp_path: Path) -> None:
    base = {"channel_id": CHANNEL_ID, "date": UNIX, "text": "Пост"}
    records: list[dict[str, Any]] = [{**base, "id": 1}]
    records += [{**base, "id": 10 + n, "date": value} for n, value in enumerate(IMPOSSIBLE_DATES)]
    records += [
        {**base, "id": 30, "date": "9999-12-31T23:59:59-05:00"},  # past the end once in UTC
        {**base, "id": 31, "date": "0001-01-01T00:00:00+05:00"},  # before the epoch
        {**base, "id": INT64_MAX + 1},
        {**base, "id": "9" * 5000},
        {**base, "id": 32, "channel_id": INT64_MAX + 1},
        {**base, "id": 2, "edited": float("nan")},
        {**base, "id": 3, "edit_date": 10**30, "views": INT64_MAX + 1, "forwards": 2**70,
         "grouped_id": -(2**70), "reactions": {"👍": 2**64, "🔥": 3}},
        {**base, "id": 4, "views": INT64_MAX, "grouped_id": INT64_MAX},
    ]
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(records), encoding="utf-8")  # Infinity/NaN as JSON allows them
    posts, skipped = read_dump(path)
    assert [p.message_id for p in posts] == [1, 2, 3, 4]
    assert (posts[1].edited, posts[2].edited) == (None, None)
    # Counters no index can hold are dropped, as counters that are not numbers are.
    assert (posts[2].views, posts[2].forwards, posts[2].grouped_id) == (None, None, None)
    assert posts[2].reactions == {"🔥": 3}
    assert (posts[3].views, posts[3].grouped_id) == (INT64_MAX, INT64_MAX)
    reasons = {s.record: s.reason for s in skipped}
    dated = [f"message {10 + n}" for n in range(len(IMPOSSIBLE_DATES))] + ["message 30",
                                                                          "message 31"]
    assert all(reasons[r].startswith("bad date ") for r in dated), reasons
    first = len(IMPOSSIBLE_DATES) + 4
    assert reasons[f"item {first}"].startswith("bad message id 9223372036854775808")
    assert reasons[f"item {first + 1}"].startswith("bad message id '99999")
    assert reasons["message 32"].startswith("bad channel id 9223372036854775808")
    assert len(skipped) == len(IMPOSSIBLE_DATES) + 5
    assert all(len(s.reason) < 120 for s in skipped)
    for post in posts:
        post.to_document()


def test_jsonl_impossible_values_skip_only_their_line(tmp_path: Path) -> None:
    lines = [
        '{"id": 1, "channel_id": 5, "date": 1733302828, "text": "ок"}',
        '{"id": 2, "channel_id": 5, "date": Infinity, "text": "бесконечность"}',
        '{"id": 3, "channel_id": 5, "date": NaN, "text": "не число"}',
        '{"id": 4, "channel_id": 5, "date": 1e15, "text": "далеко"}',
        '{"id": 5, "channel_id": 5, "date": 1733302828, "text": "ок", "views": 1e400}',
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    posts, skipped = split(list(read_paths([path])))
    assert [p.message_id for p in posts] == [1, 5]
    assert posts[1].views is None
    assert [s.record for s in skipped] == [f"line {n} (message {n})" for n in (2, 3, 4)]


def test_truncated_json_reason_reads_once(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[{"id": 1, "text": "обрез', encoding="utf-8")
    with pytest.raises(NotReadable) as caught:
        open_reader(path)
    assert caught.value.reason == (
        "malformed JSON: Unterminated string starting at line 1, column 20"
    )  # it said "starting at at line"
    lines = tmp_path / "cut.jsonl"
    lines.write_text('{"id": 1, "channel_id": 5, "date": 1, "text": "ок"}\n{"id": 2, "text": "об',
                     encoding="utf-8")
    _, skipped = split(list(read_paths([lines])))
    assert [s.reason for s in skipped] == [
        "malformed JSON: Unterminated string starting at column 19"
    ]


# --- nothing readable at all (it used to be an empty, successful read) ----------------------------


@pytest.mark.parametrize("make", ["empty folder", "folder of other files", "notes.txt",
                                  "random bytes", "truncated JSON", "unreadable file",
                                  "group chat export", "two bad files"])
def test_nothing_readable_raises_nothing_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: str
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    target: Path = root
    if make == "folder of other files":
        (root / "readme.md").write_text("# заметки", encoding="utf-8")
        (root / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    elif make == "notes.txt":
        target = root / "notes.txt"
        target.write_text("просто заметки", encoding="utf-8")
    elif make == "random bytes":
        target = root / "blob.json"
        target.write_bytes(bytes(range(256)) * 4)
    elif make == "truncated JSON":
        target = root / "cut.json"
        target.write_text(json.dumps(chat([message(1), message(2)]))[:150], encoding="utf-8")
    elif make == "unreadable file":
        target = write_json(root / "posts.json", [{"id": 1, "channel_id": 5, "text": "a",
                                                   "date": UNIX}])
        real = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == target:
                raise PermissionError(13, "Permission denied")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    elif make == "group chat export":
        target = write_json(root / "result.json", {**chat([message(1)]), "type": "private_group"})
    elif make == "two bad files":
        (root / "a.json").write_text("{", encoding="utf-8")
        (root / "b.jsonl").write_text("nope", encoding="utf-8")
    with pytest.raises(NothingToRead) as caught:
        list(read_paths([target]))
    error = caught.value
    assert isinstance(error, InputError) and error.hint and "export" in error.hint
    if make in ("empty folder", "folder of other files"):
        assert error.problems == []
        assert error.message.startswith(f"nothing to ingest in {root}: no Telegram export")
    else:
        assert error.problems and error.message.startswith("nothing could be read: ")
        assert "cannot read: Permission denied" in error.message or make != "unreadable file"
        assert ("and 1 more" in error.message) == (make == "two bad files")


def test_a_readable_file_among_bad_ones_is_read_and_an_empty_export_is_no_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "a_bad.json").write_text("{", encoding="utf-8")
    write_json(tmp_path / "b_ok.json", [{"id": 1, "channel_id": 5, "text": "ok", "date": UNIX}])
    posts, skipped = split(list(read_paths([tmp_path])))
    assert [p.doc_id for p in posts] == ["tg:5:1"] and len(skipped) == 1
    # An export of a channel without posts was read: nothing new, but nothing wrong either.
    empty = write_json(tmp_path / "empty" / "result.json", chat([]))
    assert list(read_paths([empty.parent])) == []
    only_skips = write_json(tmp_path / "media" / "result.json", chat([message(1, "")]))
    (item,) = read_paths([only_skips])
    assert isinstance(item, SkippedRecord) and item.record == "message 1"


# --- zipped export folders ------------------------------------------------------------------------


def zip_folder(folder: Path, target: Path, prefix: str = "ChatExport_2024-12-04/") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, prefix + file.relative_to(folder).as_posix())
        archive.writestr(prefix + "photos/photo_1.jpg", b"\xff\xd8\xff" * 100)
    return target


def test_zipped_export_reads_like_the_folder(tmp_path: Path, sample_export: Path) -> None:
    folder = [i for i in read_paths([sample_export])]
    for prefix in ("", "ChatExport_2024-12-04/"):
        archive = zip_folder(sample_export, tmp_path / f"export{len(prefix)}.zip", prefix)
        assert isinstance(open_reader(archive), ZipExport)
        zipped = list(read_paths([archive]))
        assert [i for i in zipped if isinstance(i, Post)] == [
            i for i in folder if isinstance(i, Post)]
        assert {p.channel for p in zipped if isinstance(p, Post)} >= {"dengi_i_banki"}
        skipped = [i for i in zipped if isinstance(i, SkippedRecord)]
        assert all(s.source == f"{archive}/{prefix}result.json" for s in skipped)
    # The name does not matter, the content does.
    renamed = tmp_path / "upload.json"
    renamed.write_bytes(archive.read_bytes())
    assert len([i for i in read_paths([renamed]) if isinstance(i, Post)]) == len(
        [i for i in folder if isinstance(i, Post)])


def test_zip_member_names_never_leave_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    export = json.dumps(chat([message(1, "Пост")]))
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("../../escaped/result.json", export)
        out.writestr("/abs/result.json", export)
        out.writestr("__MACOSX/result.json", export)
        out.writestr("ok/result.json", export)
    posts, skipped = split(list(read_paths([archive])))
    assert [(p.doc_id, p.text) for p in posts] == [(f"tg:{CHANNEL_ID}:1", "Пост")]
    assert skipped == []
    assert not (tmp_path.parent / "escaped").exists() and not Path("/abs").exists()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("../../escaped/result.json", export)
    with pytest.raises(NothingToRead, match="a zip without result.json"):
        list(read_paths([archive]))


def test_zip_bomb_is_refused_by_the_unpacked_size(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("result.json", " " * (8 * 2**20))  # 8 MB of spaces: ~8 KB packed
        out.writestr("small/result.json", json.dumps(chat([message(1, "Пост")])))
    assert archive.stat().st_size < 64 * 1024
    items = list(read_paths([archive], max_unzipped_bytes=2**20))
    posts, skipped = split(items)
    assert [p.message_id for p in posts] == [1]  # the other export in the zip is still read
    assert [(s.source, s.record) for s in skipped] == [(f"{archive}/result.json", "file")]
    assert skipped[0].reason.startswith("unpacks to more than 1 MB")
    # A header that lies about the size does not get past the cap either.
    liar = tmp_path / "liar.zip"
    raw = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(signature)  # the first member: the 8 MB one
        raw[at + offset:at + offset + 4] = (100).to_bytes(4, "little")
    liar.write_bytes(bytes(raw))
    posts, skipped = split(list(read_paths([liar], max_unzipped_bytes=2**20)))
    assert [p.message_id for p in posts] == [1]
    assert skipped[0].record == "file" and "cannot unpack it from the zip" in skipped[0].reason


@pytest.mark.parametrize("damage", ["truncated", "no result.json", "empty zip"])
def test_damaged_or_foreign_zip_is_nothing_to_read(tmp_path: Path, damage: str) -> None:
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        if damage == "no result.json":
            out.writestr("posts.txt", "просто текст")
        elif damage != "empty zip":
            out.writestr("result.json", json.dumps(chat([message(n) for n in range(1, 50)])))
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(NothingToRead) as caught:
        list(read_paths([archive]))
    (problem,) = caught.value.problems
    assert problem[0] == str(archive)
    assert problem[1].startswith(
        "a zip without result.json" if damage != "truncated" else "malformed JSON"
    ) or problem[1].startswith("not a readable zip")
