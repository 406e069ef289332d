"""Ingestion: readers turn Telegram posts into Documents; the pipeline tags, splits, embeds,
stores."""
