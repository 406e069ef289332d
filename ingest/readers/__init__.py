"""Readers of Telegram posts from files: pick the right one by content, or walk whole folders.

* :func:`open_reader` — one file (or an export folder) → the :class:`PostReader` for its format.
* :func:`read_paths` — files and folders → every :class:`Post` and :class:`SkippedRecord` in them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.readers.base import PostReader, ReadItem, SkippedRecord
from ingest.readers.dump import JSONL_SUFFIXES, DumpReader, dump_records, looks_like_jsonl
from ingest.readers.export import RESULT_FILE, ExportReader, is_export
from ingest.readers.source import json_error_reason, read_source
from rag.errors import InputError, NotReadable

__all__ = [
    "DumpReader",
    "ExportReader",
    "NotReadable",
    "PostReader",
    "ReadItem",
    "SkippedRecord",
    "open_reader",
    "read_paths",
]

DEFAULT_MAX_POST_CHARS = 65536
READ_SUFFIXES = frozenset({".json"}) | JSONL_SUFFIXES
EXPECTED = (
    "expected a Telegram Desktop export (result.json or its folder), a JSON array of posts, "
    "an object with \"messages\": [...], or JSONL (one post object per line)"
)
PATH_HINT = NotReadable.HINT


def open_reader(path: str | Path, max_post_chars: int = DEFAULT_MAX_POST_CHARS) -> PostReader:
    """The reader for one file or export folder, chosen by its content (not its name).

    A Desktop export (``chats``, or ``messages`` with ``name``/``type``/``id``) is read by
    :class:`ExportReader`; a JSON array of posts, an object with ``messages``, or JSONL by
    :class:`DumpReader`.
    Raises :class:`InputError` when the path does not exist and :class:`NotReadable` (an
    ``InputError``) when the file is not valid JSON or not a known format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", hint=PATH_HINT)
    if path.is_dir():
        if (path / RESULT_FILE).is_file():
            return ExportReader(path, max_post_chars)
        raise NotReadable(path, f"a folder without {RESULT_FILE}; use read_paths to read folders")
    source = read_source(path)
    if not source.text.strip():
        raise NotReadable(
            path, f"not a Telegram export or JSON dump: the file is empty; {EXPECTED}"
        )
    if path.suffix.lower() in JSONL_SUFFIXES:
        return DumpReader(path, max_post_chars, source=source, jsonl=True)
    try:
        data = json.loads(source.text)
    except json.JSONDecodeError as error:
        # Several JSON values one per line is JSONL; its bad lines are skipped one by one later.
        if looks_like_jsonl(source.text):
            return DumpReader(path, max_post_chars, source=source, jsonl=True)
        raise NotReadable(path, json_error_reason(error)) from None
    if is_export(data):
        return ExportReader(path, max_post_chars, source=source, data=data)
    records = dump_records(data)
    if isinstance(records, str):
        raise NotReadable(path, f"not a Telegram export or JSON dump: {records}; {EXPECTED}")
    return DumpReader(path, max_post_chars, source=source, data=data, jsonl=False)


def read_paths(
    paths: Iterable[str | Path], max_post_chars: int = DEFAULT_MAX_POST_CHARS
) -> Iterator[ReadItem]:
    """Every post and skipped record in the given files and folders, in a deterministic order.

    Folders are walked in sorted order for ``*.json``, ``*.jsonl`` and ``*.ndjson``; a folder that
    holds ``result.json`` is a Desktop export and only that file is read (its ``channels.json``
    is metadata, its subfolders are media).  Hidden files and folders are skipped.  A file that
    cannot be read yields one file-level :class:`SkippedRecord` and the walk goes on.

    Raises :class:`InputError` at once (before anything is read) when a path does not exist.
    """
    resolved = [Path(p) for p in paths]
    missing = [str(p) for p in resolved if not p.exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}", hint=PATH_HINT)
    return _read_all(resolved, max_post_chars)


def input_files(path: Path) -> Iterator[Path]:
    """The files :func:`read_paths` reads under ``path`` (``path`` itself when it is a file)."""
    if not path.is_dir():
        yield path
        return
    if (path / RESULT_FILE).is_file():
        yield path / RESULT_FILE
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from input_files(child)
        elif child.suffix.lower() in READ_SUFFIXES:
            yield child


def _read_all(paths: list[Path], max_post_chars: int) -> Iterator[ReadItem]:
    for path in paths:
        for file in input_files(path):
            try:
                reader = open_reader(file, max_post_chars)
            except NotReadable as error:
                yield SkippedRecord(str(file), "file", error.reason)
                continue
            except OSError as error:
                yield SkippedRecord(str(file), "file", f"cannot read: {error.strerror or error}")
                continue
            yield from reader.iter_posts()
