"""Post-aware splitting sized for the embedding model.

A post that fits the model (most do) stays one chunk.  A longer one is cut on paragraph and sentence
boundaries into chunks of at most ``chunk_tokens`` model tokens.  Chunk ids are deterministic,
``<doc id>#<n>``, so re-ingesting a post overwrites its points instead of adding new ones.

Two kinds of text defeat a plain ``SentenceSplitter`` and are handled here:

* the model's token count includes its fixed framing (special tokens, the ``passage:`` prefix:
  5 tokens for an empty text).  ``SentenceSplitter`` sums the counts of small pieces, so each
  piece was charged that framing again: text cut into words or characters came out in tiny chunks
  (a 65 KB space-free post became 729 chunks of ~96 characters).  The splitter is handed counts
  without the framing;
* a run of text without whitespace longer than a chunk (a blob, a base64 string) can only be cut
  character by character, where token counts are not additive at all.  Such runs are cut apart
  here, by the model's real count of each piece (:func:`cut_to_budget`).

Every chunk is finally checked with the real count, so none exceeds the model's budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.node_parser import NodeParser, SentenceSplitter
from llama_index.core.schema import BaseNode, NodeRelationship, TextNode
from pydantic import Field, PrivateAttr

from ingest.sentence_boundaries import punkt_sentences
from rag.ids import chunk_id

# A whitespace-free run at least this many characters long *may* exceed a chunk (some scripts and
# emoji take several tokens per character); its real token count decides.
_RUN_MIN_CHARS_PER_TOKEN = 4
# No chunk is longer than this many characters per budget token, whatever the count says (a
# tokenizer that merges long repeats would otherwise allow megabyte chunks).
_MAX_CHARS_PER_TOKEN = 16


def cut_to_budget(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """``text`` cut into consecutive pieces of at most ``budget`` tokens (by ``count``), each as
    long as it can be, ending after a whitespace when one is in its second half.

    The pieces concatenate to ``text``: nothing is dropped or added.
    """
    pieces: list[str] = []
    start = 0
    while start < len(text):
        limit = min(len(text), start + budget * _MAX_CHARS_PER_TOKEN)
        if count(text[start:limit]) <= budget:
            end = limit
        else:
            # The longest prefix within budget (token counts grow with the prefix, nearly always;
            # only a checked length is ever taken, so a rare dip never yields a piece over budget).
            low, high = start + 1, limit - 1
            end = start + 1
            while low <= high:
                middle = (low + high) // 2
                if count(text[start:middle]) <= budget:
                    end, low = middle, middle + 1
                else:
                    high = middle - 1
            space = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if space >= start + (end - start) // 2:
                end = space + 1
        pieces.append(text[start:end])
        start = end
    return pieces


class PostSplitter(NodeParser):
    """One node per post when it fits, else sentence-aware chunks of ≤ ``chunk_tokens`` tokens."""

    chunk_tokens: int = Field(480, description="Max model tokens per chunk.")
    chunk_overlap: int = Field(32, description="Overlap between chunks of one post, in tokens.")
    _count: Callable[[str], int] = PrivateAttr()
    _splitter: SentenceSplitter = PrivateAttr()
    _long_run: re.Pattern[str] = PrivateAttr()

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int = 480,
                 chunk_overlap: int = 32, **kwargs: Any) -> None:
        super().__init__(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                         include_prev_next_rel=False, **kwargs)
        self._count = count_tokens
        framing = count_tokens("")

        def content_tokens(text: str) -> range:
            return range(max(count_tokens(text) - framing, 0))

        # SentenceSplitter measures with len(tokenizer(text)): the model's count minus the framing
        # (see the module docstring), the framing paid once per chunk.
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens - framing,
            chunk_overlap=chunk_overlap,
            tokenizer=content_tokens,
            paragraph_separator="\n\n",
            # LlamaIndex's own Punkt tokenizer, without the 115 MB its import drags in.
            chunking_tokenizer_fn=punkt_sentences,
            include_metadata=False,
            include_prev_next_rel=False,
        )
        self._long_run = re.compile(rf"\S{{{max(chunk_tokens // _RUN_MIN_CHARS_PER_TOKEN, 1)},}}")

    @classmethod
    def class_name(cls) -> str:
        return "PostSplitter"

    def split_post(self, text: str) -> list[str]:
        """The chunk texts of one post (the whole text when it fits)."""
        if self._count(text) <= self.chunk_tokens:
            return [text]
        pieces: list[str] = []
        pos = 0
        for match in self._long_run.finditer(text):
            if self._count(match.group(0)) <= self.chunk_tokens:
                continue  # a long word or link that fits: the sentence splitter keeps it whole
            pieces += self._split_prose(text[pos:match.start()])
            pieces += cut_to_budget(match.group(0), self._count, self.chunk_tokens)
            pos = match.end()
        pieces += self._split_prose(text[pos:])
        return pieces

    def _split_prose(self, text: str) -> list[str]:
        if not text.strip():
            return []
        out: list[str] = []
        for piece in self._splitter.split_text(text):
            # Summed counts are an estimate; the real count has the last word.
            if self._count(piece) <= self.chunk_tokens:
                out.append(piece)
            else:
                out += cut_to_budget(piece, self._count, self.chunk_tokens)
        return out

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False,
                     **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        for doc in nodes:
            for n, piece in enumerate(self.split_post(doc.get_content())):
                node = TextNode(
                    id_=chunk_id(doc.node_id, n),
                    text=piece,
                    metadata=dict(doc.metadata),
                    excluded_embed_metadata_keys=list(doc.excluded_embed_metadata_keys),
                    excluded_llm_metadata_keys=list(doc.excluded_llm_metadata_keys),
                )
                node.relationships[NodeRelationship.SOURCE] = doc.as_related_node_info()
                out.append(node)
        return out
