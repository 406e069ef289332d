"""Identifiers, in one place: document, chunk and point ids, channel ids and references, tenants
and the Redis namespace.

* Document id of a post: ``tg:<channel_id>:<message_id>`` for the ``default`` tenant (the
  contract's id), ``<tenant>/tg:<channel_id>:<message_id>`` for any other, so that two tenants
  ingesting one channel each get their own copy (own vectors, tags and docstore entry) and one
  tenant's edit or delete never touches another's.  Tenant names are ``[a-z0-9_-]{1,64}``, so the
  ``/`` never appears in a name or a default id.
* A group chat's messages are indexed in *windows* (``ingest.chat_windows``): a window's document
  id is that of its first message, ``tg:<chat_id>:<first message id>`` (:func:`window_doc_id`),
  like an album's.  Windows are consecutive runs of the chat, so a window's first message is a
  boundary of the whole partition: re-reading from it rebuilds the same windows, and a window
  whose first message is deleted comes back under the next message's id (the old id is deleted).
  Supergroups are channels to Telegram (one id space with channels); a small group's id is its
  bare chat id.
* Chunk id ``<doc id>#<n>``; the point id is ``uuid5`` of the chunk id, so writing a chunk twice
  overwrites it instead of duplicating it.
* ``channel_id`` is the bare positive id: Telegram's Bot-API form ``-1001000724666`` and the
  export's ``channel1000724666`` both mean ``1000724666``.
* Channel references typed by people: ``@name``, ``https://t.me/name``, ``name`` or an id.
* Every Redis key of a collection starts with ``tgrag:<collection>`` (:func:`namespace`); a
  tenant's channel catalog lives under ``<namespace>:tenant:<tenant>``.
"""

from __future__ import annotations

import re
import uuid

from rag.errors import InputError

DEFAULT_TENANT = "default"
TENANT_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
POINT_NAMESPACE = uuid.UUID("6f1d2c3e-8a7b-4c5d-9e0f-7a6b5c4d3e2f")
_DOC_ID = re.compile(r"^(?:(?P<tenant>[a-z0-9_-]{1,64})/)?tg:(?P<channel>\d+):(?P<message>\d+)$")


# -- tenants --------------------------------------------------------------------------------------


def validate_tenant(name: str) -> str:
    """The tenant name, normalised; an :class:`InputError` when it is not a valid name."""
    tenant = name.strip().lower()
    if not TENANT_RE.match(tenant):
        raise InputError(
            f"invalid tenant name {name!r}",
            hint="tenant names are 1-64 characters of a-z, 0-9, '_' and '-'",
        )
    return tenant


# -- documents, chunks, points --------------------------------------------------------------------


def doc_id(channel_id: int, message_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """The document id of a post of ``tenant`` (see the module docstring)."""
    base = f"tg:{channel_id}:{message_id}"
    return base if tenant == DEFAULT_TENANT else f"{tenant}/{base}"


def doc_id_prefix(channel_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """What every document id of one channel of ``tenant`` starts with (ends with ``:``)."""
    return doc_id(channel_id, 0, tenant).removesuffix("0")


def parse_doc_id(value: str) -> tuple[str, int, int]:
    """``(tenant, channel_id, message_id)`` of a document id; :class:`InputError` otherwise."""
    match = _DOC_ID.match(value)
    if match is None:
        raise InputError(f"{value!r} is not a post id",
                         hint="post ids look like tg:<channel_id>:<message_id>")
    return (match["tenant"] or DEFAULT_TENANT, int(match["channel"]), int(match["message"]))


def window_doc_id(chat_id: int, first_message_id: int, tenant: str = DEFAULT_TENANT) -> str:
    """The document id of a window of group-chat messages (see the module docstring)."""
    return doc_id(chat_id, first_message_id, tenant)


def tenant_of_doc_id(value: str) -> str:
    head, sep, _ = value.partition("/")
    return head if sep else DEFAULT_TENANT


def chunk_id(document_id: str, n: int) -> str:
    return f"{document_id}#{n}"


def chunk_number(node_id: str) -> int:
    """``n`` of a chunk id made by :func:`chunk_id` (0 for an id without one)."""
    _, _, n = node_id.rpartition("#")
    return int(n) if n.isdigit() else 0


def point_id(node_id: str) -> str:
    """The engine's point id (a UUID) of a chunk id such as ``tg:1000724666:5#0``."""
    return str(uuid.uuid5(POINT_NAMESPACE, node_id))


# -- channels -------------------------------------------------------------------------------------


def normalize_channel_id(raw: int | str) -> int:
    """The bare positive channel id: ``-1001000724666`` and ``channel1000724666`` → 1000724666."""
    text = str(raw).strip()
    for prefix in ("channel", "chat"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    value = abs(int(text))
    digits = str(value)
    # Bot API style ids are -100<id>; a bare channel id never starts with "100" and has 13 digits.
    if digits.startswith("100") and len(digits) == 13:
        value = int(digits[3:])
    return value


def is_channel_id(text: str) -> bool:
    """Whether a reference typed by a person is a numeric channel id (``-100…`` included)."""
    return text.strip().lstrip("-").isdigit()


def normalize_ref(ref: str | int) -> str:
    """The key of a channel reference: ``@Name``, ``t.me/Name``, ``name`` → ``name``; an id →
    its bare form.  :class:`InputError` for something that is neither (e.g. a title)."""
    text = str(ref).strip()
    for prefix in ("https://", "http://", "t.me/", "@"):
        text = text.removeprefix(prefix)
    text = text.strip("/")
    if not text:
        raise InputError(f"empty channel reference {ref!r}", hint="use @username or an id")
    if is_channel_id(text):
        return str(normalize_channel_id(text))
    if "/" in text or " " in text:
        raise InputError(f"{ref!r} is not a channel username or id",
                         hint="use @username, https://t.me/username or a numeric id")
    return text.lower()


def post_link(channel_id: int, channel: str, message_id: int) -> str:
    """``https://t.me/<username>/<id>`` when the username is known, else the ``/c/`` form."""
    if channel:
        return f"https://t.me/{channel}/{message_id}"
    return f"https://t.me/c/{channel_id}/{message_id}"


# -- Redis ----------------------------------------------------------------------------------------


def namespace(collection: str) -> str:
    """The prefix of every Redis key of a collection."""
    return f"tgrag:{collection}"


def catalog_namespace(base: str, tenant: str) -> str:
    """The Redis namespace of a tenant's channel catalog (the default one is the shared one)."""
    return base if tenant == DEFAULT_TENANT else f"{base}:tenant:{tenant}"
