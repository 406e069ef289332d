"""Readers of Telegram posts from files: pick the right one by content, or walk whole folders.

* :func:`open_reader` — one file (or an export folder, or one zipped) → the :class:`PostReader`
  for its format.
* :func:`read_paths` — files and folders → every :class:`Post` and :class:`SkippedRecord` in them,
  or :class:`~rag.errors.NothingToRead` when not one of them could be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.readers.archive import DEFAULT_MAX_UNZIPPED_BYTES, ZipExport, is_zip
from ingest.readers.base import PostReader, ReadItem, SkippedRecord
from ingest.readers.dump import JSONL_SUFFIXES, DumpReader, dump_records, looks_like_jsonl
from ingest.readers.export import RESULT_FILE, ExportReader, is_export
from ingest.readers.source import json_error_reason, read_source
from rag.errors import InputError, NothingToRead, NotReadable

__all__ = [
    "DEFAULT_MAX_UNZIPPED_BYTES",
    "DumpReader",
    "ExportReader",
    "NotReadable",
    "NothingToRead",
    "PostReader",
    "ReadItem",
    "SkippedRecord",
    "ZipExport",
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


def open_reader(
    path: str | Path,
    max_post_chars: int = DEFAULT_MAX_POST_CHARS,
    *,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
) -> PostReader:
    """The reader for one file or export folder, chosen by its content (not its name).

    A Desktop export (``chats``, or ``messages`` with ``name``/``type``/``id``) is read by
    :class:`ExportReader`, a zip of an export folder by :class:`ZipExport` (inflating at most
    ``max_unzipped_bytes``); a JSON array of posts, an object with ``messages``, or JSONL by
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
    if is_zip(path):
        return ZipExport(path, max_post_chars, max_unzipped_bytes=max_unzipped_bytes)
    source = read_source(path)
    if not source.text.strip():
        raise NotReadable(
            path, f"not a Telegram export or JSON dump: the file is empty; {EXPECTED}"
        )
    if path.suffix.lower() in JSONL_SUFFIXES and looks_like_jsonl(source.text):
        # A .jsonl without one JSON object in its first lines is not JSONL: judged as JSON below.
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
    paths: Iterable[str | Path],
    max_post_chars: int = DEFAULT_MAX_POST_CHARS,
    *,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
) -> Iterator[ReadItem]:
    """Every post and skipped record in the given files and folders, in a deterministic order.

    Folders are walked in sorted order for ``*.json``, ``*.jsonl`` and ``*.ndjson``; a folder that
    holds ``result.json`` is a Desktop export and only that file is read (its ``channels.json``
    is metadata, its subfolders are media).  Hidden files and folders are skipped; a zip is read
    when it is named (``export.zip``), not found in a walk.  A file that cannot be read yields one
    file-level :class:`SkippedRecord` and the walk goes on.

    Raises :class:`InputError` at once (before anything is read) when a path does not exist, and
    :class:`NothingToRead` at the end when not one file could be read (none found, or every one
    failed): a caller then knows the input was wrong, not merely empty of new posts.
    """
    resolved = [Path(p) for p in paths]
    missing = [str(p) for p in resolved if not p.exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}", hint=PATH_HINT)
    return _read_all(resolved, max_post_chars, max_unzipped_bytes)


def input_files(path: Path) -> Iterator[Path | SkippedRecord]:
    """The files :func:`read_paths` reads under ``path`` (``path`` itself when it is a file), and
    a folder-level :class:`SkippedRecord` for each folder that cannot be listed."""
    if not path.is_dir():
        yield path
        return
    if (path / RESULT_FILE).is_file():
        yield path / RESULT_FILE
        return
    try:
        children = sorted(path.iterdir())
    except OSError as error:
        yield SkippedRecord(str(path), "folder", f"cannot read: {error.strerror or error}")
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from input_files(child)
        elif child.suffix.lower() in READ_SUFFIXES:
            yield child


def _read_all(
    paths: list[Path], max_post_chars: int, max_unzipped_bytes: int
) -> Iterator[ReadItem]:
    problems: list[tuple[str, str]] = []
    files_read = 0
    for path in paths:
        for file in input_files(path):
            if isinstance(file, SkippedRecord):
                problems.append((file.source, file.reason))
                yield file
                continue
            try:
                reader = open_reader(file, max_post_chars, max_unzipped_bytes=max_unzipped_bytes)
            except NotReadable as error:
                problems.append((str(file), error.reason))
                yield SkippedRecord(str(file), "file", error.reason)
                continue
            except OSError as error:
                reason = f"cannot read: {error.strerror or error}"
                problems.append((str(file), reason))
                yield SkippedRecord(str(file), "file", reason)
                continue
            # A reader that skips each of its files as a whole (not an export, a chat that is no
            # channel, malformed JSON) read nothing; one that read a file, even of no posts, did.
            intact = set(reader.sources)
            for item in reader.iter_posts():
                if isinstance(item, SkippedRecord) and item.record == "file" and (
                        item.source in intact):
                    intact.discard(item.source)
                    problems.append((item.source, item.reason))
                yield item
            files_read += bool(intact)
    if not files_read:
        raise _nothing_read(paths, problems)


def _nothing_read(paths: list[Path], problems: list[tuple[str, str]]) -> NothingToRead:
    where = ", ".join(str(p) for p in paths)
    if not problems:
        message = (
            f"nothing to ingest in {where}: no Telegram export ({RESULT_FILE}) and no .json, "
            ".jsonl or .ndjson dump there (zips are read only when named)"
        )
    else:
        source, reason = problems[0]
        more = f" (and {len(problems) - 1} more files that could not be read)" if len(
            problems) > 1 else ""
        message = f"nothing could be read: {source}: {reason}{more}"
    return NothingToRead(message, hint=PATH_HINT, problems=problems)
