"""The one spelling of a tag, shared by the taggers (ingest/) and the tag filters (rag/search)."""

from __future__ import annotations

import re

MAX_TAG_CHARS = 40


def normalize_tag(tag: str) -> str:
    """Lowercase, ``ё``→``е``, spaces→``_``, no ``#``.

    ``#Ключевая Ставка`` → ``ключевая_ставка``.
    """
    tag = tag.strip().lstrip("#").lower().replace("ё", "е")
    return re.sub(r"\s+", "_", tag)[:MAX_TAG_CHARS]
