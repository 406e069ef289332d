"""Known channel names are never downgraded by a source that lacks them.

A Telegram Desktop ``result.json`` has no usernames (``channels.json`` beside it supplies them) and
some dumps have no titles.  Ingested alone after a complete source, such a file used to blank the
channels' usernames (links fell back to ``t.me/c/…``, ``--channel <username>`` stopped matching)
and, since names are part of a post's hash, re-embed every post.  So before the pipeline hashes a
post, an empty username or title is filled in from the catalog of the same tenant (the pipeline's
index is a tenant view); a non-empty one is kept as the source says (a rename).
"""

from __future__ import annotations

import dataclasses

from ingest.documents import Post
from rag.catalog import ChannelCatalog


def with_known_names(posts: list[Post], catalog: ChannelCatalog) -> list[Post]:
    """``posts``, each with the username and title the catalog knows where its own are empty."""
    lacking = sorted({p.channel_id for p in posts if not (p.channel and p.channel_title)})
    known = catalog.known_names(lacking)
    if not known:
        return posts
    out = []
    for post in posts:
        username, title = known.get(post.channel_id, ("", ""))
        if (username and not post.channel) or (title and not post.channel_title):
            post = dataclasses.replace(post, channel=post.channel or username,
                                       channel_title=post.channel_title or title)
        out.append(post)
    return out
