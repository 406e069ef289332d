"""The bot's alert parts without Telegram: reading ``/alert``, the remove button's data, the
notification and list messages (escaped, split under Telegram's limit), and a kept hit read back."""

from __future__ import annotations

import pytest

from api.bot.alert_messages import alerts_messages, describe_row, notification_messages
from api.bot.backend import AlertRow
from api.bot.callbacks import UnalertAction, parse_action, unalert_data
from api.bot.formatting import fits
from api.bot.query import parse_alert
from api.bot.texts import menu
from rag.alerts.delivery import Notification
from rag.alerts.model import build_alert
from rag.search import PostHit
from rag.settings import Settings


@pytest.mark.parametrize(("text", "rule", "query", "channels"), [
    ("ключевая ставка @banki", "semantic", "ключевая ставка", ("banki",)),
    ("words: ставки по вкладам", "words", "ставки по вкладам", ()),
    ("Слова:ипотека #недвижимость", "words", "ипотека", ()),
    ("mention", "mention", "", ()),
    ("mention: релиз, миграция базы @devchat", "mention", "релиз, миграция базы", ("devchat",)),
    ("упоминания: релиз", "mention", "релиз", ()),
    ("mention релиз", "semantic", "mention релиз", ()),  # no colon: just words
])
def test_parse_alert(text: str, rule: str, query: str, channels: tuple[str, ...]) -> None:
    got_rule, got = parse_alert(text)
    assert (got_rule, got.text, got.filters.channels) == (rule, query, channels)


def test_unalert_button_data_is_strict() -> None:
    assert parse_action(unalert_data("0123456789ab")) == UnalertAction("0123456789ab")
    for forged in (b"u:0123456789AB", b"u:0123", b"u:0123456789abc", b"u:../../x"):
        assert parse_action(forged) is None


def test_the_menu_has_the_alert_commands_before_help() -> None:
    assert [c for c, _ in menu("ru")] == [
        "search", "ask", "digest", "channels", "alert", "alerts", "help"]
    assert [c for c, _ in menu("en")][-3:] == ["alert", "alerts", "help"]


HIT = PostHit(id="tg:1:2", channel_id=1, channel="evil", channel_title="<i>Зло</i> & Co",
              message_id=2, date=1714557600, link="https://t.me/evil/2", score=1.0,
              snippet='Курс <b>рубля</b> <a href="x">вырос</a>', tags=["курс"],
              highlights=[(0, 4)],
              copies=[PostHit(id="tg:3:4", channel_id=3, channel="", channel_title="Копии",
                              message_id=4, date=1714561200, link="https://t.me/c/3/4",
                              score=0.0, snippet="", tags=[])])


def test_a_kept_hit_reads_back_as_it_was() -> None:
    again = PostHit.from_dict(HIT.to_dict())
    assert again.to_dict() == HIT.to_dict()
    assert again.copies[0].date == 1714561200 and again.copies[0].snippet == ""


def test_a_notification_is_escaped_and_names_its_alert() -> None:
    (message,) = notification_messages("words", "курс <рубля>", HIT.to_dict(), "ru")
    assert message.startswith("🔔 По оповещению «курс &lt;рубля&gt;», все слова:\n"
                              "<b>&lt;i&gt;Зло&lt;/i&gt; &amp; Co</b> · 01.05.2024\n<b>Курс</b> ")
    assert "&lt;b&gt;рубля&lt;/b&gt; &lt;a href=&quot;x&quot;&gt;вырос&lt;/a&gt;" in message
    assert 'также в: <a href="https://t.me/c/3/4">Копии, 01.05.2024</a>' in message
    (mention,) = notification_messages("mention", "", HIT.to_dict(), "en")
    assert mention.startswith("🔔 For your alert mentions of the account in groups:\n")


def test_the_plain_text_of_a_mention_notification() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    alert = build_alert(settings, "default", "", rule="mention")
    note = Notification("bot:x:tg:1:2", alert, HIT.to_dict())
    assert note.text().startswith("🔔 упоминание\n<i>Зло</i> & Co · 2024-05-01 10:00 UTC")


def test_a_long_list_of_alerts_is_split_with_its_buttons() -> None:
    rows = [AlertRow(f"{n:012x}", "очень длинный запрос про ключевую ставку " * 3, "semantic",
                     ("@banki",), ("ставка",), 1714557600, None) for n in range(100)]
    messages = alerts_messages(rows, "ru")
    assert len(messages) > 1 and all(fits(text) for text, _ in messages)
    assert [r.id for _, shown in messages for r in shown] == [r.id for r in rows]
    assert all(len(shown) <= 50 for _, shown in messages)
    first = messages[0][0]
    assert first.startswith("<b>Ваши оповещения</b> (100):\n1. «очень длинный")
    assert describe_row(rows[0], "en").endswith("· @banki · #ставка · from 2024-05-01")
    assert alerts_messages([], "en") == [(
        "No alerts yet; save one: <code>/alert key rate</code>", [])]
