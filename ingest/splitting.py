"""Post-aware splitting sized for the embedding model.

A post that fits the model (most do) stays one chunk.  A longer one is cut on paragraph and sentence
boundaries into chunks of at most ``chunk_tokens`` model tokens.  Chunk ids are deterministic,
``<doc id>#<n>``, so re-ingesting a post overwrites its points instead of adding new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.node_parser import NodeParser, SentenceSplitter
from llama_index.core.schema import BaseNode, NodeRelationship, TextNode
from pydantic import Field, PrivateAttr

from rag.ids import chunk_id


class PostSplitter(NodeParser):
    """One node per post when it fits, else sentence-aware chunks of ≤ ``chunk_tokens`` tokens."""

    chunk_tokens: int = Field(480, description="Max model tokens per chunk.")
    chunk_overlap: int = Field(32, description="Overlap between chunks of one post, in tokens.")
    _count: Callable[[str], int] = PrivateAttr()
    _splitter: SentenceSplitter = PrivateAttr()

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int = 480,
                 chunk_overlap: int = 32, **kwargs: Any) -> None:
        super().__init__(chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                         include_prev_next_rel=False, **kwargs)
        self._count = count_tokens
        # SentenceSplitter measures with len(tokenizer(text)); hand it the model's own count.
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=chunk_overlap,
            tokenizer=lambda text: range(count_tokens(text)),
            paragraph_separator="\n\n",
            include_metadata=False,
            include_prev_next_rel=False,
        )

    @classmethod
    def class_name(cls) -> str:
        return "PostSplitter"

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False,
                     **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        for doc in nodes:
            text = doc.get_content()
            pieces = [text] if self._count(text) <= self.chunk_tokens else \
                self._splitter.split_text(text)
            for n, piece in enumerate(pieces):
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

