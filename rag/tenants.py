"""Tenants: who owns a post, and the document ids that keep tenants apart.

Every post belongs to one tenant (payload ``tenant``, a Qdrant ``is_tenant`` keyword index, one
collection for all tenants as Qdrant recommends).  Posts ingested by the CLI, Telegram sync or a
key without a tenant belong to ``default``.

Document ids must not collide when two tenants ingest the same channel: each tenant gets its own
copy of the post (its own vectors, tags and docstore entry), so one tenant's edit or delete never
touches another's.  The rule:

* tenant ``default``: ``tg:<channel_id>:<message_id>`` (the contract's id, unchanged);
* any other tenant:   ``<tenant>/tg:<channel_id>:<message_id>``.

Tenant names are ``[a-z0-9_-]{1,64}``, so the ``/`` never appears in a name or a default id.
Each tenant also has its own channel catalog (names, per-channel counts) in Redis, so ``/stats``
and channel-name resolution never reveal another tenant's channels.
"""

from __future__ import annotations

import re

from rag.errors import InputError
from rag.store import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "catalog_namespace", "tenant_doc_id", "tenant_of_doc_id",
           "validate_tenant"]
TENANT_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


def validate_tenant(name: str) -> str:
    tenant = name.strip().lower()
    if not TENANT_RE.match(tenant):
        raise InputError(
            f"invalid tenant name {name!r}",
            hint="tenant names are 1-64 characters of a-z, 0-9, '_' and '-'",
        )
    return tenant


def tenant_doc_id(tenant: str, channel_id: int, message_id: int) -> str:
    """The document id of a post of ``tenant`` (see the module docstring)."""
    base = f"tg:{channel_id}:{message_id}"
    return base if tenant == DEFAULT_TENANT else f"{tenant}/{base}"


def tenant_of_doc_id(doc_id: str) -> str:
    head, sep, _ = doc_id.partition("/")
    return head if sep else DEFAULT_TENANT


def catalog_namespace(namespace: str, tenant: str) -> str:
    """The Redis namespace of a tenant's channel catalog (the default one is the shared one)."""
    return namespace if tenant == DEFAULT_TENANT else f"{namespace}:tenant:{tenant}"
