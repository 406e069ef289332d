"""Surfaces over the core: the ``tgrag`` CLI (:mod:`api.cli`) and the HTTP app (:mod:`api.app`).

Both are thin: they parse input, call ``rag``/``ingest``, and map :class:`rag.errors.TgragError`
once (CLI: one line and an exit code; HTTP: ``application/problem+json``).
"""
