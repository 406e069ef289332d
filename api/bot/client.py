"""The bot's Telegram client: ``TGRAG_TG_API_ID``/``TGRAG_TG_API_HASH`` (MTProto needs them for
bots too) and a session file ``<data dir>/bot-<bot id>.session`` (mode 600).

The session file keeps the bot's login, so a restart does not log in again (Telegram limits how
often a token may log in), and its update state, so updates sent while the bot was down are
fetched when it comes back (``catch_up``).
"""

from __future__ import annotations

import os

from telethon import TelegramClient

from api.bot.runner import bot_id_of
from rag.errors import InputError
from rag.settings import Settings


def bot_session_path(settings: Settings, token: str) -> str:
    path = settings.data_dir / f"bot-{bot_id_of(token)}.session"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # never world-readable: it holds the bot's login
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return str(path)


def make_bot_client(settings: Settings) -> TelegramClient:
    if not settings.tg_bot_token or not settings.tg_bot_token.get_secret_value():
        raise InputError("TGRAG_TG_BOT_TOKEN is not set",
                         hint="create a bot with @BotFather (/newbot) and set its token")
    if not settings.tg_api_id or not settings.tg_api_hash:
        raise InputError("the bot needs TGRAG_TG_API_ID and TGRAG_TG_API_HASH too",
                         hint="get them at https://my.telegram.org (API development tools)")
    token = settings.tg_bot_token.get_secret_value()
    client = TelegramClient(bot_session_path(settings, token), settings.tg_api_id,
                            settings.tg_api_hash.get_secret_value(), catch_up=True,
                            receive_updates=True)
    # Flood waits are the bot's to honour (the answer being written waits, see streaming.py),
    # not to be slept through inside Telethon while the user waits without a word.
    client.flood_sleep_threshold = 0
    return client
