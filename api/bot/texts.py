"""Everything the bot says, in Russian and English (English for users whose Telegram app is in
English, Russian for everyone else).  ``t(lang, key, **values)`` escapes every value that is not
already :class:`~api.bot.markup.Html`, so no template can let post or user text through as markup.
"""

from __future__ import annotations

from typing import Literal

from api.bot.markup import Html, escape

Lang = Literal["ru", "en"]

TEXTS: dict[str, dict[Lang, str]] = {
    "refusal": {
        "ru": "Извините, этот бот доступен только приглашённым пользователям.",
        "en": "Sorry, this bot is only available to invited users.",
    },
    # inline mode's "switch to PM" button: at most 64 characters
    "refusal_short": {
        "ru": "Бот доступен только приглашённым пользователям",
        "en": "Only invited users can use this bot",
    },
    "rate_limited": {
        "ru": "Слишком много запросов: подождите {seconds} с.",
        "en": "Too many requests: please wait {seconds} s.",
    },
    "failed": {
        "ru": "Не получилось ответить: сервис временно недоступен, попробуйте позже.",
        "en": "Something went wrong on our side; please try again later.",
    },
    "llm_failed": {
        "ru": "Не получилось написать ответ: языковая модель недоступна, попробуйте позже.",
        "en": "Could not write the answer: the language model is unavailable; try again later.",
    },
    "bad_input": {
        "ru": "Не получилось разобрать запрос: {detail}",
        "en": "Could not read the request: {detail}",
    },
    "not_found_item": {"ru": "Не нашёл: {detail}", "en": "Not found: {detail}"},
    "busy": {
        "ru": "Канал сейчас синхронизируется; попробуйте через минуту.",
        "en": "The channel is being synced right now; try again in a minute.",
    },
    "empty_query": {
        "ru": "Напишите, что искать: например, <code>ключевая ставка</code> или "
              "<code>курс рубля @канал since:2024-06-01</code>.",
        "en": "Type what to look for, e.g. <code>key rate</code> or "
              "<code>exchange rate @channel since:2024-06-01</code>.",
    },
    "unknown_command": {
        "ru": "Не знаю такой команды; /help — что я умею.",
        "en": "I do not know that command; /help lists what I can do.",
    },
    "search_header": {"ru": "🔎 <b>{query}</b> · {first}–{last}",
                      "en": "🔎 <b>{query}</b> · {first}–{last}"},
    "no_results": {"ru": "🔎 По запросу <b>{query}</b> ничего не нашлось.",
                   "en": "🔎 Nothing found for <b>{query}</b>."},
    "no_more": {"ru": "🔎 <b>{query}</b>: больше результатов нет.",
                "en": "🔎 <b>{query}</b>: no more results."},
    "prev": {"ru": "◀ Назад", "en": "◀ Back"},
    "next": {"ru": "Дальше ▶", "en": "Next ▶"},
    "similar_button": {"ru": "Похожие на {n}", "en": "Similar to {n}"},
    "back_to_results": {"ru": "← К результатам", "en": "← To the results"},
    "similar_header": {"ru": "Похожие на пост {title}, {date}:",
                       "en": "Posts similar to {title}, {date}:"},
    "no_similar": {"ru": "Похожих постов не нашлось.", "en": "No similar posts found."},
    "copies": {"ru": "также в: ", "en": "also in: "},
    "more_copies": {"ru": "и ещё {n}", "en": "and {n} more"},
    "stale_button": {
        "ru": "Эта кнопка устарела — отправьте запрос ещё раз.",
        "en": "This button has expired; please send the query again.",
    },
    "source_gone": {
        "ru": "Исходный запрос удалён — отправьте его ещё раз.",
        "en": "The original query was deleted; please send it again.",
    },
    "thinking": {"ru": "⏳ Ищу ответ…", "en": "⏳ Looking for an answer…"},
    "sources": {"ru": "Источники:", "en": "Sources:"},
    "nothing_relevant": {
        "ru": "Ничего релевантного не нашлось — попробуйте другие слова или меньше фильтров.",
        "en": "Nothing relevant found; try other words or fewer filters.",
    },
    "extractive_note": {
        "ru": "(ответ собран из цитат: языковая модель не подключена)",
        "en": "(quoted from the posts: no language model is configured)",
    },
    "ask_busy": {
        "ru": "Подождите: предыдущий ответ ещё пишется.",
        "en": "Please wait: the previous answer is still being written.",
    },
    "alert_usage": {
        "ru": "Напишите, о чём сообщать: <code>/alert ключевая ставка</code> (по смыслу), "
              "<code>/alert words: ставки по вкладам</code> (все слова, в любой форме) или "
              "<code>/alert mention: релиз</code> (упоминания в группах). Фильтры те же, что в "
              "поиске: <code>@канал</code>, <code>#тег</code>, <code>since:2024-06-01</code>, "
              "<code>until:…</code>.",
        "en": "Say what to watch for: <code>/alert key rate</code> (by meaning), "
              "<code>/alert words: deposit rates</code> (every word, any form) or "
              "<code>/alert mention: release</code> (mentions in groups). The search's filters "
              "work here too: <code>@channel</code>, <code>#tag</code>, "
              "<code>since:2024-06-01</code>, <code>until:…</code>.",
    },
    "alert_saved": {
        "ru": "🔔 Оповещение <code>{id}</code> сохранено: {what}.\nНовые посты, которые "
              "подходят, пришлю сюда. Все оповещения: /alerts",
        "en": "🔔 Alert <code>{id}</code> saved: {what}.\nNew posts that match it will come "
              "here. All your alerts: /alerts",
    },
    "alert_semantic": {"ru": "«{query}», по смыслу", "en": "“{query}”, by meaning"},
    "alert_words": {"ru": "«{query}», все слова", "en": "“{query}”, every word"},
    "alert_mention": {"ru": "упоминания аккаунта в группах", "en": "mentions of the account "
                      "in groups"},
    "alert_mention_words": {"ru": "упоминания аккаунта и «{query}» в группах",
                            "en": "mentions of the account and “{query}” in groups"},
    "alert_since": {"ru": "с {day}", "en": "from {day}"},
    "alert_until": {"ru": "по {day}", "en": "until {day}"},
    "alerts_header": {"ru": "<b>Ваши оповещения</b> ({n}):", "en": "<b>Your alerts</b> ({n}):"},
    "no_alerts": {"ru": "Оповещений пока нет; сохраните: <code>/alert ключевая ставка</code>",
                  "en": "No alerts yet; save one: <code>/alert key rate</code>"},
    "unalert_button": {"ru": "✖ {n}", "en": "✖ {n}"},
    "unalert_usage": {"ru": "Напишите так: <code>/unalert ID</code> (ID — в /alerts)",
                      "en": "Usage: <code>/unalert ID</code> (the IDs are in /alerts)"},
    "alert_removed": {"ru": "Оповещение <code>{id}</code> удалено: {what}.",
                      "en": "Alert <code>{id}</code> removed: {what}."},
    "alert_gone": {"ru": "Такого оповещения у вас нет; список: /alerts",
                   "en": "You have no such alert; the list: /alerts"},
    "alert_gone_short": {"ru": "Этого оповещения уже нет", "en": "That alert is gone already"},
    "alert_notice": {"ru": "🔔 По оповещению {what}:", "en": "🔔 For your alert {what}:"},
    "channels_header": {"ru": "<b>Каналы в поиске</b> ({n}):",
                        "en": "<b>Channels in the search</b> ({n}):"},
    "no_channels": {"ru": "Каналов в поиске пока нет.", "en": "No channels in the search yet."},
    "no_channels_admin": {"ru": "Каналов пока нет; добавьте: /follow @канал",
                          "en": "No channels yet; add one: /follow @channel"},
    "last_sync": {"ru": "синхр. {when}", "en": "synced {when}"},
    "never_synced": {"ru": "ещё не синхронизирован", "en": "not synced yet"},
    "last_post": {"ru": "последний пост {when}", "en": "last post {when}"},
    "sync_error": {"ru": "ошибка: {error}", "en": "error: {error}"},
    "not_followed_note": {"ru": "не отслеживается", "en": "not followed"},
    "admin_only": {
        "ru": "Добавлять и убирать каналы могут только администраторы.",
        "en": "Only admins can add and remove channels.",
    },
    "follow_usage": {"ru": "Напишите так: <code>/follow @канал</code>",
                     "en": "Usage: <code>/follow @channel</code>"},
    "unfollow_usage": {"ru": "Напишите так: <code>/unfollow @канал</code>",
                       "en": "Usage: <code>/unfollow @channel</code>"},
    "following": {"ru": "Добавляю {ref} и загружаю его посты…",
                  "en": "Adding {ref} and loading its posts…"},
    "followed": {"ru": "Слежу за «{title}»: {posts} в поиске (новых: {new}).",
                 "en": "Following “{title}”: {posts} searchable ({new} new)."},
    "followed_later": {
        "ru": "Канал {ref} добавлен; его посты загрузит ближайшая синхронизация.",
        "en": "Channel {ref} added; the next sync will load its posts.",
    },
    "follow_failed": {"ru": "Не получилось загрузить {ref}: {error}",
                      "en": "Could not load {ref}: {error}"},
    "follow_busy": {"ru": "{ref} уже синхронизирует другой процесс; посты скоро появятся.",
                    "en": "Another worker is syncing {ref}; its posts will appear soon."},
    "unfollowed": {"ru": "Больше не слежу за {ref}; его посты остаются в поиске.",
                   "en": "No longer following {ref}; its posts stay searchable."},
    "not_followed": {"ru": "Канала {ref} нет в списке.", "en": "{ref} is not followed."},
    "forward_offer": {"ru": "Это пост из канала «{title}». Следить за каналом?",
                      "en": "This post is from “{title}”. Follow the channel?"},
    "follow_button": {"ru": "Следить за каналом", "en": "Follow the channel"},
    "forward_known": {"ru": "Канал «{title}» уже в поиске.",
                      "en": "“{title}” is already in the search."},
    "forward_not_admin": {
        "ru": "Это пост из канала «{title}»; добавить канал может администратор.",
        "en": "This post is from “{title}”; an admin can add the channel.",
    },
    "forward_unknown": {"ru": "Не вижу, из какого канала этот пост.",
                        "en": "I cannot tell which channel this post comes from."},
    "digest_working": {"ru": "⏳ Собираю дайджест…", "en": "⏳ Putting the digest together…"},
    "digest_header": {"ru": "📰 <b>Дайджест</b> · {start} – {end} · {posts}",
                      "en": "📰 <b>Digest</b> · {start} – {end} · {posts}"},
    "digest_daily_header": {"ru": "📰 <b>Главное за день</b> · {start} – {end} · {posts}",
                            "en": "📰 <b>The day's top stories</b> · {start} – {end} · {posts}"},
    "digest_empty": {
        "ru": "📰 За {start} – {end} постов нет: попробуйте <code>/digest 3d</code> или меньше "
              "фильтров.",
        "en": "📰 No posts from {start} to {end}: try <code>/digest 3d</code> or fewer filters.",
    },
    "digest_shown": {"ru": "Показаны {shown} главных сюжетов из {total}.",
                     "en": "The top {shown} of {total} stories."},
    "digest_truncated": {
        "ru": "(постов за период больше, чем умещается в дайджест: собраны самые новые)",
        "en": "(the period has more posts than a digest holds: the newest were grouped)",
    },
    "digest_more_channels": {"ru": "ещё {n}", "en": "{n} more"},
    "digest_usage": {
        "ru": "Напишите так: <code>/digest</code> (за сутки), <code>/digest 3d</code>, "
              "<code>/digest 12h @канал #тег</code>; <code>/digest off</code> — не присылать "
              "ежедневный дайджест, <code>/digest on</code> — присылать.",
        "en": "Usage: <code>/digest</code> (the last day), <code>/digest 3d</code>, "
              "<code>/digest 12h @channel #tag</code>; <code>/digest off</code> stops the daily "
              "digest, <code>/digest on</code> brings it back.",
    },
    "digest_off": {"ru": "Больше не пришлю ежедневный дайджест; вернуть: <code>/digest on</code>.",
                   "en": "No more daily digests; to get them again: <code>/digest on</code>."},
    "digest_on": {"ru": "Буду присылать дайджест каждый день в {when}.",
                  "en": "You will get the digest every day at {when}."},
    "digest_not_scheduled": {
        "ru": "Ежедневный дайджест здесь не настроен; <code>/digest</code> соберёт его сейчас.",
        "en": "No daily digest is set up here; <code>/digest</code> makes one now.",
    },
    "digest_unsubscribe": {"ru": "Не присылать каждый день: /digest off",
                           "en": "Stop the daily digest: /digest off"},
    "help": {
        "ru": "<b>tgrag</b> ищет по постам Telegram-каналов.\n\n"
              "• Напишите, что найти: <code>ключевая ставка</code> (или /search …)\n"
              "• Вопрос со знаком «?» или /ask — ответ по постам со ссылками на источники\n"
              "• Фильтры прямо в запросе: <code>@канал</code>, <code>#тег</code>, "
              "<code>since:2024-06-01</code>, <code>until:2024-06-30</code>\n"
              "• Кнопки под результатами листают страницы и ищут похожие посты\n"
              "• /digest — главное за сутки (<code>/digest 3d @канал</code>){daily}\n"
              "• /channels — каналы в поиске\n"
              "• В любом чате: <code>@{bot} запрос</code>\n"
              "• /alert запрос — присылать новые посты по запросу; /alerts — ваши оповещения\n"
              "{admin}\nВаш Telegram id: <code>{user_id}</code>",
        "en": "<b>tgrag</b> searches the posts of Telegram channels.\n\n"
              "• Type what to find: <code>key rate</code> (or /search …)\n"
              "• A question ending in “?” or /ask: an answer from the posts, with its sources\n"
              "• Filters inside the query: <code>@channel</code>, <code>#tag</code>, "
              "<code>since:2024-06-01</code>, <code>until:2024-06-30</code>\n"
              "• The buttons under the results turn pages and find similar posts\n"
              "• /digest: the last day's top stories (<code>/digest 3d @channel</code>){daily}\n"
              "• /channels: the channels in the search\n"
              "• In any chat: <code>@{bot} query</code>\n"
              "• /alert query: get the new posts that match; /alerts: your alerts\n"
              "{admin}\nYour Telegram id: <code>{user_id}</code>",
    },
    "help_daily": {"ru": "; каждый день в {when}, <code>/digest off</code> — не присылать",
                   "en": "; sent daily at {when}, <code>/digest off</code> to stop"},
    "help_admin": {
        "ru": "• /follow @канал, /unfollow @канал — добавить или убрать канал; перешлите "
              "сюда пост канала, чтобы добавить его\n",
        "en": "• /follow @channel, /unfollow @channel: add or remove a channel; forward a "
              "channel's post here to add it\n",
    },
}

# The command menu Telegram shows (bots.setBotCommands), per language.
COMMANDS: dict[Lang, list[tuple[str, str]]] = {
    "ru": [("search", "найти посты"), ("ask", "ответ по постам"),
           ("digest", "главное за сутки"), ("channels", "каналы в поиске"),
           ("help", "что умеет бот")],
    "en": [("search", "find posts"), ("ask", "answer from the posts"),
           ("digest", "the day's top stories"), ("channels", "channels in the search"),
           ("help", "what the bot does")],
}


# The alerts' commands, kept apart from COMMANDS and put before /help by menu().
ALERT_COMMANDS: dict[Lang, list[tuple[str, str]]] = {
    "ru": [("alert", "сообщать о новых постах"), ("alerts", "мои оповещения")],
    "en": [("alert", "get new posts that match"), ("alerts", "your alerts")],
}


def menu(lang: Lang) -> list[tuple[str, str]]:
    """The command menu Telegram shows in ``lang``: COMMANDS, the alerts' before /help."""
    commands = [c for c in COMMANDS[lang] if c[0] != "help"]
    return commands + ALERT_COMMANDS[lang] + [c for c in COMMANDS[lang] if c[0] == "help"]


def language(lang_code: str | None) -> Lang:
    """English for an English Telegram app, Russian otherwise."""
    return "en" if (lang_code or "").lower().startswith("en") else "ru"


def t(lang: Lang, key: str, **values: object) -> Html:
    """The text ``key`` in ``lang``, with ``values`` escaped (unless already :class:`Html`)."""
    safe = {k: v if isinstance(v, Html) else escape(v) for k, v in values.items()}
    return Html(TEXTS[key][lang].format(**safe))


def posts_count(lang: Lang, n: int) -> str:
    """``1 пост``, ``3 поста``, ``5 постов`` / ``1 post``, ``5 posts``."""
    if lang == "en":
        return f"{n} post" + ("" if n == 1 else "s")
    if n % 10 == 1 and n % 100 != 11:
        word = "пост"
    elif 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        word = "поста"
    else:
        word = "постов"
    return f"{n} {word}"


def label(lang: Lang, key: str, **values: object) -> str:
    """A button's label: plain text (Telegram shows labels as they are; nothing to escape)."""
    return TEXTS[key][lang].format(**values)
