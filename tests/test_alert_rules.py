"""Alert rules and shapes without an index: the words rule (lemma-aware, phrases), what a saved
alert may be, the notification text with its copies, and the webhook signature."""

from __future__ import annotations

import pytest

from rag.alerts.delivery import Notification
from rag.alerts.model import Alert, build_alert, check_webhook_url
from rag.alerts.webhook import sign, verify
from rag.alerts.words import WordsRule
from rag.errors import InputError
from rag.settings import Settings
from rag.sparse import shared_analyzer


def matches(query: str, text: str) -> bool:
    return WordsRule.parse(query).matches(shared_analyzer().tokens(text))


@pytest.mark.parametrize(("query", "text"), [
    ("ставки", "ЦБ сохранил ставку на уровне 16%"),  # another case of the same word
    ("ключевая ставка", "Регулятор повысил ключевую ставку"),
    ("ставка ЦБ", "ЦБ: ставки по вкладам растут"),  # any order
    ("ёлка", "Елки на площадях поставят к 20 декабря"),
    ('"ставки по вкладам"', "банки подняли ставки по вкладам"),
    ('"ставки по вкладам"', "Ставок по вкладам выше 20% не будет"),  # phrase, other forms
    ('«новые станции» метро', "В метро открылись новые станции"),
    ("iPhone релиз", "Релиз iPhone перенесли"),
])
def test_words_rule_matches_word_forms(query: str, text: str) -> None:
    assert matches(query, text)


@pytest.mark.parametrize(("query", "text"), [
    ("ставки вклады", "ЦБ сохранил ставку"),  # every word is needed
    ('"ставки по вкладам"', "по вкладам растут ставки"),  # a phrase keeps its order
    ('"новые станции"', "станции новые"),
    ("метро", "Метрология как наука"),  # a different word, not a prefix
])
def test_words_rule_needs_every_word_and_phrase_order(query: str, text: str) -> None:
    assert not matches(query, text)


def test_a_query_of_stopwords_is_refused() -> None:
    with pytest.raises(InputError, match="no words to match"):
        WordsRule.parse("и в на")


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_build_alert_defaults_and_shape(settings: Settings) -> None:
    alert = build_alert(settings, "default", "  ставка ЦБ ", since="2024-05-01")
    data = alert.to_dict()
    assert list(data) == ["id", "query", "filters", "rule", "threshold", "webhook", "created"]
    assert data["query"] == "ставка ЦБ" and data["rule"] == "semantic"
    assert data["threshold"] == settings.alert_threshold
    assert data["filters"] == {"channel": [], "tag": [], "since": "2024-05-01T00:00:00+00:00",
                               "until": None, "mode": settings.alert_mode}
    assert alert.secret is None and alert.channels == []
    words = build_alert(settings, "default", "ставка", rule="words", tags=["#Ставка"])
    assert words.threshold is None and words.filters.mode is None
    assert words.filters.tags == ["ставка"]
    assert Alert.from_record(words.to_record()) == words


def test_a_webhook_gets_its_own_secret_unless_the_deployment_signs(settings: Settings) -> None:
    alert = build_alert(settings, "default", "ставка", webhook="https://example.org/h")
    assert alert.secret and len(alert.secret) >= 32 and alert.channels == ["webhook"]
    assert "secret" not in alert.to_dict() and alert.secret not in str(alert.to_dict())
    signed = Settings(_env_file=None, alert_webhook_secret="deployment")  # type: ignore[call-arg]
    assert build_alert(signed, "default", "ставка", webhook="https://example.org/h").secret is None


@pytest.mark.parametrize(("options", "needle"), [
    ({"query": " "}, "empty alert query"),
    ({"query": "x" * 2001}, "the limit is 2000"),
    ({"rule": "regex"}, "unknown alert rule"),
    ({"threshold": 1.5}, "threshold must be in (0, 1]"),
    ({"threshold": 0}, "threshold must be in (0, 1]"),
    ({"mode": "sparse"}, "not a mode of semantic alerts"),
    ({"rule": "words", "threshold": 0.9}, "a words alert has no threshold"),
    ({"rule": "words", "mode": "dense"}, "a words alert has no mode"),
    ({"rule": "words", "query": "и на"}, "no words to match"),
    ({"mode": "hybrid", "query": "и на"}, "no words to match"),
    ({"since": "2024-05-10", "until": "2024-05-01"}, "is after"),
    ({"since": "вчера"}, "invalid date"),
    ({"webhook": "ftp://example.org/x"}, "is not a webhook URL"),
    ({"webhook": "https://user:pw@example.org/x"}, "credentials"),
])
def test_bad_alerts_are_refused_with_a_hint(settings: Settings, options: dict,
                                            needle: str) -> None:
    options = {"query": "ставка", **options}
    query = options.pop("query")
    with pytest.raises(InputError) as err:
        build_alert(settings, "default", query, **options)
    assert needle in err.value.message and err.value.hint


def test_private_webhooks_only_for_the_operator(settings: Settings) -> None:
    # The default tenant runs the deployment: its webhooks may go anywhere (a local n8n).
    assert build_alert(settings, "default", "ставка", webhook="http://127.0.0.1:9/h").webhook
    for url in ("http://127.0.0.1:9/h", "http://10.1.2.3/h", "http://169.254.169.254/latest",
                "http://[::1]/h", "http://localhost/h"):
        with pytest.raises(InputError, match="private address"):
            build_alert(settings, "acme", "ставка", webhook=url)
    allowed = Settings(_env_file=None, alert_webhook_private=True)  # type: ignore[call-arg]
    assert build_alert(allowed, "acme", "ставка", webhook="http://127.0.0.1:9/h").webhook
    assert check_webhook_url("https://93.184.215.14/h", allow_private=False)


def test_notification_text_lists_the_copies(settings: Settings) -> None:
    alert = build_alert(settings, "default", "ключевая ставка")
    hit = {"id": "tg:1:5", "channel_id": 1, "channel": "econ", "channel_title": "Экономика",
           "message_id": 5, "date": "2024-05-01T10:00:00+00:00", "link": "https://t.me/econ/5",
           "score": 0.9, "snippet": "ЦБ повысил ключевую ставку", "tags": [], "highlights": [],
           "copies": [{"id": "tg:2:7", "channel": "", "channel_id": 2, "channel_title": "Город",
                       "message_id": 7, "link": "https://t.me/c/2/7",
                       "date": "2024-05-01T10:05:00+00:00"}]}
    note = Notification("webhook:x:tg:1:5", alert, hit)
    text = note.text()
    assert text.splitlines() == ["🔔 «ключевая ставка»", "Экономика · 2024-05-01 10:00 UTC",
                                 "ЦБ повысил ключевую ставку", "https://t.me/econ/5",
                                 "также в: Город https://t.me/c/2/7"]
    body = note.payload()
    assert body["delivery_id"] == note.id and body["match"] == hit and body["text"] == text
    assert body["alert"] == alert.to_dict()


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = '{"a": "ставка"}'.encode()
    signature = sign("k", body)
    # echo -n '{"a": "ставка"}' | openssl dgst -sha256 -hmac k
    import hashlib
    import hmac

    assert signature == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify("k", body, signature) and not verify("k2", body, signature)
    assert not verify("k", body + b" ", signature)
