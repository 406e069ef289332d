"""Live Telegram: a Telethon reader (same Posts as the export reader) and channel sync."""
