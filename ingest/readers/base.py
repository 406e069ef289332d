"""What every reader yields: a :class:`Post`, or a :class:`SkippedRecord` saying what was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from ingest.documents import Post


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A record that was not ingested, and why (shown to the user, counted in the summary)."""

    source: str  # the file
    record: str  # where in the file: "message 123", "line 17", "item 4"
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.record}: {self.reason}"


ReadItem = Post | SkippedRecord


class PostReader(BaseReader):
    """Base for readers of one file; also usable as a LlamaIndex reader (``load_data``)."""

    def __init__(self, path: str | Path, max_post_chars: int = 65536) -> None:
        self.path = Path(path)
        self.max_post_chars = max_post_chars

    @property
    def sources(self) -> list[str]:
        """How records name the files this reader reads: a file-level :class:`SkippedRecord` for
        every one of them means the reader read nothing at all."""
        return [str(self.path)]

    def iter_posts(self) -> Iterator[ReadItem]:  # pragma: no cover - abstract
        raise NotImplementedError

    def lazy_load_data(self, *args: object, **kwargs: object) -> Iterator[Document]:
        for item in self.iter_posts():
            if isinstance(item, Post):
                yield item.to_document()
