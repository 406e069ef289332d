"""A day of posts with known stories, for the digest tests (not a test module).

On 2024-05-02 (UTC), six channels:

* the **rate** story: the central bank's decision, reported by three channels in their own words
  (cosines 0.915-0.92 with the bundled model), plus two near-duplicate copies of the first report
  (a footer added, an emoji in front), so 5 posts, 3 distinct texts;
* the **metro** story: three channels on the same new stations, in their own words;
* a **game** release, read 100× more than its channel's usual post (the channel's two other posts
  are ordinary single stories);
* a **weather** post; a group-chat window (never in a digest without a channel filter);
* before the day: an older post of the rate channel; for tenant ``acme``: a post of its own.

Expected ranking at the default threshold: rate (5 posts) > game (one post, engagement clipped to
4) > metro (3 posts without counters) > the rest (1 each).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.documents import GROUP, Post

ECON = (2001, "econ_daily", "Экономика за день")
NEWS = (2002, "news_now", "Новости сейчас")
WIRE = (2003, "wire", "Лента")
CITY = (2004, "moscow_city", "Город")
GAMES = (2005, "games", "Игры")
WEATHER = (2006, "", "Погода в Москве")
CHAT = (2007, "chat_group", "Чат жильцов")
ACME = (2101, "acme_news", "Новости Акме")

RATE_1 = ("Банк России повысил ключевую ставку до 18% годовых. Регулятор объяснил решение "
          "ускорением инфляции и перегревом кредитования.")
RATE_2 = ("ЦБ поднял ключевую ставку сразу на два процентных пункта, до 18%. Набиуллина заявила, "
          "что инфляция остаётся слишком высокой.")
RATE_3 = ("Ключевая ставка теперь 18%: Центробанк ужесточил денежно-кредитную политику из-за "
          "высокой инфляции.")
METRO = [
    "В Москве открылись три новые станции метро на Большой кольцевой линии: «Ясная», «Полевая» "
    "и «Лесная».",
    "Собянин открыл три станции Большой кольцевой линии метро — «Ясная», «Полевая» и «Лесная» "
    "уже принимают пассажиров.",
    "Большая кольцевая линия метро стала длиннее: сегодня открыты станции «Ясная», «Полевая» и "
    "«Лесная».",
]
GAME = ("Вышел долгожданный сиквел ролевой игры «Северный ветер»: открытый мир, новые классы и "
        "кооператив.")
GAMES_OTHER = [
    "Популярный шутер получил бесплатное обновление с тремя картами и новым оружием.",
    "Инди-платформер от небольшой студии стал хитом продаж в цифровом магазине.",
]
WEATHER_TEXT = ("Синоптики обещают в Москве первые заморозки: ночью до минус трёх градусов, днём "
                "около плюс пяти.")
CHAT_TEXT = "Соседи, кто знает, когда дадут горячую воду? Во втором подъезде опять нет."
ACME_TEXT = "Акме открыла завод по выпуску роботов-пылесосов в Подмосковье."
OLD_TEXT = "Минфин разместил облигации федерального займа на 50 млрд рублей."

DAY = "2024-05-02"


def at(hour: int, minute: int = 0, day: int = 2) -> int:
    return int(datetime(2024, 5, day, hour, minute, tzinfo=UTC).timestamp())


def post(channel: tuple[int, str, str], message_id: int, date: int, text: str,
         **extra: object) -> Post:
    cid, username, title = channel
    return Post(channel_id=cid, channel=username, channel_title=title, message_id=message_id,
                date=date, text=text, **extra)  # type: ignore[arg-type]


def day_posts() -> list[Post]:
    """The default tenant's posts (see the module docstring)."""
    return [
        post(ECON, 10, at(8), RATE_1, views=1000, forwards=10),
        post(NEWS, 20, at(8, 30), RATE_1 + "\n\n🔴 Подписаться | Прислать новость", views=800),
        post(WIRE, 30, at(9), RATE_2, views=500),
        post(ECON, 11, at(10), RATE_3, views=900),
        post(CITY, 40, at(10, 30), "⚡️" + RATE_1, views=300),
        post(CITY, 41, at(11), METRO[0]),
        post(NEWS, 21, at(11, 30), METRO[1]),
        post(WIRE, 31, at(12), METRO[2]),
        post(GAMES, 50, at(13), GAME, views=100_000, forwards=900),
        post(GAMES, 51, at(14), GAMES_OTHER[0], views=1000),
        post(GAMES, 52, at(15), GAMES_OTHER[1], views=1100),
        post(WEATHER, 60, at(16), WEATHER_TEXT),
        post(CHAT, 70, at(17), CHAT_TEXT, chat_type=GROUP, sender_id=5, sender_name="Иван"),
        post(ECON, 1, at(9, day=1), OLD_TEXT, views=1000),
    ]


def acme_posts() -> list[Post]:
    return [post(ACME, 1, at(12), ACME_TEXT, tenant="acme")]


RATE_IDS = {"tg:2001:10", "tg:2002:20", "tg:2003:30", "tg:2001:11", "tg:2004:40"}
METRO_IDS = {"tg:2004:41", "tg:2002:21", "tg:2003:31"}
