"""Our own async reader over ``telethon.TelegramClient``: messages → :class:`Post`.

Not ``llama-index-readers-telegram``, which drops ids and metadata.  The Posts carry the same ids
(``tg:<channel_id>:<message_id>``) and metadata as the export reader's, so an export and a live sync
of one channel deduplicate against each other in the docstore.

* Albums (messages sharing ``grouped_id``) become ONE post: the id of the album's first message and
  the caption that exists (Telegram puts it on one of the messages).
* Entity offsets are UTF-16 code units, so link slicing is done on the surrogate-expanded text.
* Service messages and media-only posts without a caption are skipped and counted.
* :meth:`TelegramReader.resolve` tells channels from group chats (supergroups and small groups,
  read only when followed as groups: ``ingest.telegram.group_reader``) and refuses private chats
  (a person or a bot) always, whatever the caller allows.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from telethon import TelegramClient, types
from telethon.helpers import add_surrogate, del_surrogate
from telethon.sessions import StringSession

from ingest.documents import CHANNEL, GROUP, Post
from rag.errors import GroupNotOptedIn, InputError, PrivateChat
from rag.ids import normalize_channel_id
from rag.settings import Settings

SESSION_FILE = "telegram.session"


@dataclass
class ReadStats:
    """What one ``iter_posts`` call consumed (reset per call)."""

    messages: int = 0
    posts: int = 0
    service: int = 0  # joins, pins, title changes…
    empty: int = 0  # media-only posts without a caption
    # The highest raw message id belonging to a post already yielded (or skipped before it): a
    # cursor saved from this never splits an album or skips an unread message.
    consumed_upto: int = 0
    max_seen: int = 0


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A resolved channel or group chat: what a Post needs besides the message."""

    channel_id: int
    username: str
    title: str
    entity: Any  # the telethon Channel or Chat, reusable as an input peer
    chat_type: str = CHANNEL  # channel | group (a supergroup or a small group)

    @classmethod
    def from_entity(cls, entity: Any) -> ChannelRef:
        return cls(
            channel_id=normalize_channel_id(entity.id),
            username=getattr(entity, "username", None) or "",
            title=getattr(entity, "title", None) or "",
            entity=entity,
            chat_type=chat_type_of(entity),
        )

    @property
    def is_group(self) -> bool:
        return self.chat_type == GROUP


def chat_type_of(entity: Any) -> str:
    """``channel`` for a broadcast channel, ``group`` for a supergroup, a broadcast group or a
    small group; :class:`PrivateChat` for a person or a bot; :class:`InputError` otherwise."""
    if isinstance(entity, types.User | types.UserEmpty):
        raise PrivateChat(
            "this is a private chat (a person or a bot); tgrag never reads private chats",
            hint="follow channels and group chats only")
    if isinstance(entity, types.Channel):
        return GROUP if (entity.megagroup or entity.gigagroup) else CHANNEL
    if isinstance(entity, types.Chat):
        return GROUP
    if isinstance(entity, types.ChatForbidden | types.ChannelForbidden):
        raise InputError(f"no access to {getattr(entity, 'title', '') or entity.id!r} (the "
                         "account was removed or banned from it)",
                         hint="join it again with the account, or stop following it")
    raise InputError(f"{type(entity).__name__} is not a channel or a group chat",
                     hint="add a channel username, or a group chat with --group")


def _unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def extract_links(text: str, entities: Sequence[Any] | None) -> list[str]:
    """Link targets of a message: ``TextUrl`` hrefs and the visible text of ``Url`` entities.

    Offsets count UTF-16 code units (an emoji is two), so slice the surrogate-expanded text.
    """
    if not entities:
        return []
    wide = add_surrogate(text)
    links: list[str] = []
    for ent in entities:
        if isinstance(ent, types.MessageEntityTextUrl):
            url = ent.url
        elif isinstance(ent, types.MessageEntityUrl):
            url = del_surrogate(wide[ent.offset:ent.offset + ent.length])
        else:
            continue
        if url and url not in links:
            links.append(url)
    return links


def _reactions(message: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    results = getattr(getattr(message, "reactions", None), "results", None) or []
    for rc in results:
        reaction = rc.reaction
        if isinstance(reaction, types.ReactionEmoji):
            key = reaction.emoticon
        elif isinstance(reaction, types.ReactionCustomEmoji):
            key = f"custom:{reaction.document_id}"
        else:
            key = "paid" if isinstance(reaction, types.ReactionPaid) else type(reaction).__name__
        out[key] = out.get(key, 0) + int(rc.count)
    return out


def _forwarded_from(message: Any) -> str | None:
    fwd = getattr(message, "fwd_from", None)
    if fwd is None:
        return None
    if fwd.from_name:
        return str(fwd.from_name)
    forward = getattr(message, "forward", None)  # telethon's wrapper, resolved from the entities
    for who in (getattr(forward, "chat", None), getattr(forward, "sender", None)):
        if who is not None:
            name = getattr(who, "title", None) or " ".join(
                x for x in (getattr(who, "first_name", None), getattr(who, "last_name", None)) if x
            )
            if name:
                return str(name)
    peer = fwd.from_id
    if isinstance(peer, types.PeerChannel):
        return f"channel{peer.channel_id}"
    if isinstance(peer, types.PeerUser):
        return f"user{peer.user_id}"
    return "unknown"


def post_from_messages(channel: ChannelRef, messages: Sequence[Any]) -> Post | None:
    """One post from a message or an album's messages; None when there is no text at all."""
    group = sorted(messages, key=lambda m: m.id)
    first = group[0]
    texts = [m.message for m in group if (m.message or "").strip()]
    if not texts:
        return None
    links: list[str] = []
    for m in group:
        for url in extract_links(m.message or "", m.entities):
            if url not in links:
                links.append(url)
    edits = [d for d in (_unix(m.edit_date) for m in group) if d is not None]
    views = [m.views for m in group if m.views is not None]
    forwards = [m.forwards for m in group if m.forwards is not None]
    return Post(
        channel_id=channel.channel_id,
        message_id=first.id,
        date=int(first.date.timestamp()),
        # An album usually has one caption; if several messages carry text, keep them all in order.
        text="\n\n".join(texts),
        channel=channel.username,
        channel_title=channel.title,
        edited=max(edits) if edits else None,
        forwarded_from=_forwarded_from(first),
        grouped_id=first.grouped_id,
        views=max(views) if views else None,
        forwards=max(forwards) if forwards else None,
        reactions=_reactions(first),
        links=links,
    )


class TelegramReader:
    """Reads a channel's posts through an already connected :class:`TelegramClient`."""

    def __init__(self, client: TelegramClient) -> None:
        self.client = client
        self.stats = ReadStats()

    async def resolve(self, channel: str | int | ChannelRef, *,
                      allow_group: bool = False) -> ChannelRef:
        """A channel from ``@username``, ``username``, a t.me link or an id (an id is looked up
        among the account's dialogs when Telegram cannot resolve it directly, which is the only
        way to reach a small group).  A group chat needs ``allow_group`` (else
        :class:`GroupNotOptedIn`); a private chat is always :class:`PrivateChat`."""
        if isinstance(channel, ChannelRef):
            ref_ = channel
        else:
            ref: Any = channel
            if isinstance(channel, str):
                text = channel.strip().removeprefix("https://").removeprefix("t.me/")
                ref = int(text) if text.lstrip("-").isdigit() else text.removeprefix("@")
            entity = await self._entity(ref)
            try:
                ref_ = ChannelRef.from_entity(entity)
            except PrivateChat as exc:
                raise PrivateChat(f"{channel!r} is a private chat (a person or a bot); tgrag "
                                  "never reads private chats", hint=exc.hint) from None
        if ref_.is_group and not allow_group:
            raise GroupNotOptedIn(
                f"{channel if not isinstance(channel, ChannelRef) else ref_.title!r} is a group "
                "chat; its members' messages are read only when it is followed as a group",
                hint="follow it with `tgrag channels add --group …` (HTTP: POST /channels with "
                     '"group": true)')
        return ref_

    async def _entity(self, ref: str | int) -> Any:
        if not isinstance(ref, int):
            return await self.client.get_entity(ref)
        # Telethon takes a bare id for a user's; a channel's or a group's needs its access hash
        # (channels) or its kind (small groups): both come with the account's dialog list.
        wanted = normalize_channel_id(ref)
        async for dialog in self.client.iter_dialogs():
            entity = dialog.entity
            if not isinstance(entity, types.User) and normalize_channel_id(entity.id) == wanted:
                return entity
        return await self.client.get_entity(ref)

    async def iter_posts(
        self,
        channel: str | int | ChannelRef,
        min_id: int = 0,
        limit: int | None = None,
        offset_date: datetime | None = None,
        reverse: bool = True,
        max_id: int = 0,
    ) -> AsyncIterator[Post]:
        """Posts of a channel, oldest first by default (``iter_messages(min_id=…, reverse=True)``).

        ``limit`` counts messages, as Telethon does (an album of 3 is 3).  ``self.stats`` tells what
        was consumed; with ``reverse=True`` its ``consumed_upto`` is a resumable cursor.
        """
        ref = await self.resolve(channel)
        self.stats = stats = ReadStats()
        group: list[Any] = []  # the album being collected

        def done(post: Post | None, ids: list[int]) -> Post | None:
            # Set before yielding: the consumer reads the cursor right after receiving the post.
            stats.consumed_upto = max(stats.consumed_upto, *ids)
            if post is None:
                stats.empty += 1
            else:
                stats.posts += 1
            return post

        async for message in self.client.iter_messages(
            ref.entity, limit=limit, min_id=min_id, max_id=max_id, offset_date=offset_date,
            reverse=reverse,
        ):
            stats.messages += 1
            stats.max_seen = max(stats.max_seen, message.id)
            grouped_id = getattr(message, "grouped_id", None)
            if group and grouped_id != group[0].grouped_id:
                post = done(post_from_messages(ref, group), [m.id for m in group])
                group = []
                if post is not None:
                    yield post
            if not isinstance(message, types.Message):  # MessageService, MessageEmpty
                stats.service += 1
                stats.consumed_upto = max(stats.consumed_upto, message.id)
                continue
            if grouped_id is not None:
                group.append(message)
                continue
            post = done(post_from_messages(ref, [message]), [message.id])
            if post is not None:
                yield post
        if group:
            post = done(post_from_messages(ref, group), [m.id for m in group])
            if post is not None:
                yield post
        stats.consumed_upto = max(stats.consumed_upto, stats.max_seen)

    async def fetch_post(self, channel: ChannelRef, message: Any) -> Post | None:
        """The post a (live) message belongs to; for an album, its sibling messages are fetched."""
        if message.grouped_id is None:
            return post_from_messages(channel, [message])
        # Albums hold at most 10 items, so the siblings are within 9 ids either side.
        ids = [i for i in range(message.id - 9, message.id + 10) if i > 0]
        fetched = await self.client.get_messages(channel.entity, ids=ids)
        group = [
            m for m in fetched
            if isinstance(m, types.Message) and m.grouped_id == message.grouped_id
        ]
        if not any(m.id == message.id for m in group):
            group.append(message)
        return post_from_messages(channel, group)


def make_client(
    settings: Settings, *, receive_updates: bool = True, for_login: bool = False
) -> TelegramClient:
    """A client from ``TGRAG_TG_API_ID`` / ``TGRAG_TG_API_HASH`` and a session.

    The session is ``TGRAG_TG_SESSION`` (a ``StringSession``) or else the Telethon session file
    ``<data_dir>/telegram.session`` (``tgrag login --save`` writes it); ``for_login`` starts from
    a new, empty session whatever is configured (``tgrag login`` creates one).
    """
    if not settings.tg_api_id or not settings.tg_api_hash:
        raise InputError(
            "Telegram API credentials are not set",
            hint="set TGRAG_TG_API_ID and TGRAG_TG_API_HASH (from https://my.telegram.org)",
        )
    session: Any
    session_file = settings.data_dir / SESSION_FILE
    if for_login:
        session = StringSession()
    elif settings.tg_session is not None and settings.tg_session.get_secret_value():
        try:
            session = StringSession(settings.tg_session.get_secret_value())
        except ValueError as exc:
            raise InputError(f"TGRAG_TG_SESSION is not a valid session string: {exc}",
                             hint="run `tgrag login` again") from exc
    elif session_file.exists():
        session = str(session_file)
    else:
        raise InputError(
            "no Telegram session: neither TGRAG_TG_SESSION nor "
            f"{session_file} exists",
            hint="run `tgrag login --save`, or set TGRAG_TG_SESSION to the string "
                 "`tgrag login` prints",
        )
    client = TelegramClient(
        session, settings.tg_api_id, settings.tg_api_hash.get_secret_value(),
        receive_updates=receive_updates,
    )
    # Flood waits are ours to handle: ChannelSync reports them, sleeps and resumes from the cursor.
    client.flood_sleep_threshold = 0
    return client


def save_session_file(session: Any, path: Path) -> None:
    """Write a logged-in session as a Telethon session file readable by its owner only (0600).

    Written under a temporary name and renamed into place, so a reader never sees half a file and
    a previous session is replaced whole.
    """
    from telethon.sessions import SQLiteSession

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}-{os.getpid()}.session")  # SQLiteSession adds no suffix
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # never world-readable
    try:
        out = SQLiteSession(str(tmp))
        out.set_dc(session.dc_id, session.server_address, session.port)
        out.auth_key = session.auth_key
        out.save()
        out.close()
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
