"""tgrag core: settings, errors, embeddings, the Qdrant store, the Redis backend and search.

This package imports nothing from ``ingest``, ``eval`` or ``api`` (see ../shared/DESIGN.md layers).
"""
