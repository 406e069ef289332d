"""A Telegram Desktop export folder packed as a zip, read in memory and never extracted.

Exports are folders (``result.json``, ``channels.json``, media subfolders), and a folder is
uploaded as a zip.  :class:`ZipExport` reads every ``result.json`` in the zip with the
``channels.json`` of the same folder, and nothing else (media stay packed).

* Zip-slip: no member is ever written to disk, so a name like ``../../x`` or ``/etc/x`` points
  nowhere; such names are no export anyway and are left out.
* Zip bombs: the bytes inflated are capped (``max_unzipped_bytes`` over all members read; the upload
  limit for uploads).  A member whose declared size is over what is left is refused before it is
  inflated, and inflating stops at the cap whatever the header claims.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ingest.readers.base import PostReader, ReadItem, SkippedRecord
from ingest.readers.export import (
    CHANNELS_FILE,
    RESULT_FILE,
    ChannelNames,
    ExportReader,
    parse_channel_names,
)
from ingest.readers.source import decode_source
from rag.errors import NotReadable

# A zip with members, and an empty zip (only the end-of-directory record).
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
DEFAULT_MAX_UNZIPPED_BYTES = 1 << 30  # what the CLI allows; uploads pass their own limit
# What a damaged, encrypted or exotic member raises while it is inflated.
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError,
                  OSError, ValueError)


def is_zip(path: Path) -> bool:
    """Whether a file is a zip, by its first bytes (the name does not matter)."""
    with path.open("rb") as fh:
        return fh.read(4) in ZIP_MAGIC


def export_members(names: list[str]) -> list[str]:
    """The ``result.json`` members of a zip, sorted: at any depth, never hidden (``.x``,
    ``__MACOSX``), never a name that is absolute or climbs out of the archive."""
    found = []
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.name != RESULT_FILE or not safe_member(path):
            continue
        found.append(name)
    return sorted(found)


def safe_member(path: PurePosixPath) -> bool:
    return not path.is_absolute() and not any(
        part in ("..", "__MACOSX") or part.startswith(".") or ":" in part
        for part in path.parts
    )


def size_text(limit: int) -> str:
    return f"{round(limit / 2**20, 2):g} MB"


class ZipExport(PostReader):
    """Reads a zipped Telegram Desktop export: each ``result.json`` as :class:`ExportReader` does.

    Records cite ``<zip>/<member>`` (e.g. ``export.zip/ChatExport/result.json``).  A member that
    cannot be read (damaged, encrypted, over the size cap) is one file-level
    :class:`SkippedRecord`; the other members are still read.
    """

    def __init__(
        self,
        path: str | Path,
        max_post_chars: int = 65536,
        *,
        max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    ) -> None:
        """Opens the zip and lists its exports; raises :class:`NotReadable` when it is no zip or
        holds no ``result.json``."""
        super().__init__(path, max_post_chars)
        self.max_unzipped_bytes = max_unzipped_bytes
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise NotReadable(self.path, f"not a readable zip ({error})") from None
        self.members = export_members(names)
        self._names = set(names)
        if not self.members:
            raise NotReadable(
                self.path,
                f"a zip without {RESULT_FILE}: expected a Telegram Desktop export folder, zipped",
            )

    def member_name(self, member: str) -> str:
        return f"{self.path}/{member}"

    @property
    def sources(self) -> list[str]:
        return [self.member_name(m) for m in self.members]

    def iter_posts(self) -> Iterator[ReadItem]:
        left = self.max_unzipped_bytes
        with zipfile.ZipFile(self.path) as archive:
            for member in self.members:
                name = self.member_name(member)
                try:
                    data = self._inflate(archive, member, left)
                except NotReadable as problem:
                    yield SkippedRecord(name, "file", problem.reason)
                    continue
                left -= len(data)
                names, names_problem, used = self._channel_names(archive, member, left)
                left -= used
                yield from ExportReader(
                    self.path, self.max_post_chars, source=decode_source(self.path, data),
                    channel_names=(names, names_problem), name=name,
                ).iter_posts()

    def _channel_names(
        self, archive: zipfile.ZipFile, member: str, left: int
    ) -> tuple[ChannelNames, SkippedRecord | None, int]:
        """The ``channels.json`` beside ``member`` (if any), and the bytes it took."""
        parent = PurePosixPath(member).parent
        sibling = str(parent / CHANNELS_FILE) if str(parent) != "." else CHANNELS_FILE
        if sibling not in self._names:
            return {}, None, 0
        try:
            data = self._inflate(archive, sibling, left)
        except NotReadable as problem:
            return {}, SkippedRecord(self.member_name(sibling), "file",
                                     f"{problem.reason}; usernames unknown, links use t.me/c/"), 0
        names, problem = parse_channel_names(decode_source(self.path, data),
                                             self.member_name(sibling))
        return names, problem, len(data)

    def _inflate(self, archive: zipfile.ZipFile, member: str, left: int) -> bytes:
        """A member's bytes, at most ``left`` of them (see the module docstring)."""
        too_big = NotReadable(
            self.path,
            f"unpacks to more than {size_text(self.max_unzipped_bytes)}, the most one zip may "
            "unpack to; ingest the unzipped folder (or its result.json) instead"
        )
        try:
            info = archive.getinfo(member)
            if info.file_size > left:
                raise too_big
            with archive.open(info) as fh:
                data = fh.read(left + 1)
        except _MEMBER_ERRORS as error:
            raise NotReadable(self.path, f"cannot unpack it from the zip ({error})") from None
        if len(data) > left:
            raise too_big
        return data
