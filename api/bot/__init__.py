"""The tgrag Telegram bot: search, answers and channels from inside Telegram.

One more thin surface over the core (like the HTTP routes and the CLI): handlers translate
updates into use-case calls through :class:`api.bot.backend.BotBackend` and format the results.

    access.py         who may use it (TGRAG_BOT_USERS / TGRAG_BOT_ADMINS), rate limits
    query.py          commands and the inline filters @channel #tag since: until:
    markup.py         Telegram HTML escaping
    texts.py          everything the bot says, in Russian and English
    formatting.py     results, answers and channel lists as messages under 4,096 characters
    alert_messages.py alert notifications and the user's list of alerts as messages
    callbacks.py      the data behind inline buttons (stateless, restart-proof)
    streaming.py      one message edited as an answer streams (throttled, FloodWait honoured)
    failures.py       errors → one short sentence, the cause logged
    handlers.py       the Telegram handlers
    backend.py        the use cases the bot needs (a Protocol)
    services_backend.py  that Protocol over api.services.Services
    notifier.py       alert notifications sent by the bot (the ``bot`` delivery channel)
    runner.py         login, reconnects with backoff, the state /ready reports
    status.py         that state in Redis, and the one-bot-per-token claim
    client.py         the bot's Telethon client and session file
    hosting.py        running it in `tgrag serve`, `tgrag worker` or alone
    command.py        `tgrag bot`
"""
