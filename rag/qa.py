"""Question answering over the index: search → numbered sources → an answer citing [1], [2] …

* Retrieval is :class:`rag.search.PostSearcher` with the same filters as ``search``.
* Only posts above the relevance floor (:mod:`rag.relevance`: the dense score, standing out
  from the question's background, and the question's figures and names in the post, unless the
  score is very high) are sources; none left
  → ``mode="not_found"``: we say so instead of letting the LLM guess.
* With an LLM (``mode="generative"``) the prompt gives the posts as numbered sources; every ``[n]``
  in the answer that is not one of them is removed (``Answer.removed_citations`` keeps them), also
  while streaming, so a client never shows a citation that leads nowhere.
* Without an LLM, or when GigaChat refuses (``finish_reason="blacklist"``), the answer is
  extractive (``mode="extractive"``): the sentences of the sources that answer the question
  (:mod:`rag.sentences`), each followed by its post's citation; for "what happened" questions
  in date order with their dates.

``Answer.to_dict()`` is the contract's ask JSON: ``{"answer", "mode", "sources": [{"n", "id",
"channel", "message_id", "link", "date", "snippet", "score"}]}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from rag.errors import LLMError, TgragError
from rag.index import Index
from rag.llm import finish_reason
from rag.metrics import LLM_CALLS
from rag.relevance import BACKGROUND_DEPTH, RelevanceFloor, background
from rag.search import PostHit, PostSearcher, SearchFilters
from rag.sentences import Passage, SentenceSelector, cite

Mode = Literal["generative", "extractive", "not_found"]

NOT_FOUND = "В проиндексированных каналах не нашлось ничего по этому вопросу."
SOURCE_CHARS = 1500  # per source in the prompt: 5 sources stay far below the context window
SYSTEM_PROMPT = (
    "Ты отвечаешь на вопросы по постам из Telegram-каналов. Используй только приведённые "
    "источники. После каждого утверждения ставь номер источника в квадратных скобках, например "
    "[1] или [2][3]. Ссылайся только на номера из списка источников. Если в источниках нет "
    "ответа, так и скажи: «В источниках нет ответа на этот вопрос». Отвечай кратко, по-русски."
)
CITATION = re.compile(r"\[(\s*\d+(?:\s*[,;]\s*\d+)*\s*)\]")
EXTRACTIVE_PREFIX = "По найденным постам"


@dataclass(slots=True)
class Source:
    n: int
    hit: PostHit
    text: str  # the full post text given to the LLM (not in the JSON)

    def to_dict(self) -> dict[str, Any]:
        h = self.hit
        return {
            "n": self.n, "id": h.id, "channel": h.channel or h.channel_title,
            "message_id": h.message_id, "link": h.link, "date": h.date_iso,
            "snippet": h.snippet, "score": round(h.score, 4),
        }


@dataclass(slots=True)
class Answer:
    answer: str
    mode: Mode
    sources: list[Source]
    removed_citations: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "mode": self.mode,
                "sources": [s.to_dict() for s in self.sources]}


@dataclass(slots=True)
class QAEvent:
    """One streaming event: ``token`` (text), then ``sources`` (list of dicts), then ``done``."""

    type: Literal["token", "sources", "done"]
    data: Any


def clean_citations(text: str, valid: int) -> tuple[str, list[int]]:
    """Remove every ``[n]`` with n outside 1..valid; returns the text and the removed numbers."""
    removed: list[int] = []

    def fix(match: re.Match[str]) -> str:
        nums = [int(x) for x in re.findall(r"\d+", match.group(1))]
        keep = [n for n in nums if 1 <= n <= valid]
        removed.extend(n for n in nums if not 1 <= n <= valid)
        return "".join(f"[{n}]" for n in keep)

    cleaned = CITATION.sub(fix, text)
    if removed:
        cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned))
    return cleaned, removed


class CitationFilter:
    """Streaming :func:`clean_citations`: holds back text from ``[`` until the bracket closes."""

    def __init__(self, valid: int) -> None:
        self.valid = valid
        self.pending = ""
        self.removed: list[int] = []

    def feed(self, delta: str) -> str:
        self.pending += delta
        out = ""
        while self.pending:
            start = self.pending.find("[")
            if start < 0:
                out, self.pending = out + self.pending, ""
                break
            out, self.pending = out + self.pending[:start], self.pending[start:]
            end = self.pending.find("]")
            if end < 0:
                if len(self.pending) > 24 or re.search(r"[^\[\d\s,;]", self.pending):
                    out, self.pending = out + self.pending[0], self.pending[1:]
                    continue
                break  # maybe a citation: wait for more text
            piece, self.pending = self.pending[: end + 1], self.pending[end + 1:]
            cleaned, removed = clean_citations(piece, self.valid)
            self.removed += removed
            out += cleaned
        return out

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


class QAEngine:
    """Answers questions over an opened :class:`Index`, with or without an LLM."""

    def __init__(self, index: Index, llm: LLM | None = None, *, searcher: Any = None,
                 selector: SentenceSelector | None = None) -> None:
        self.index = index
        self.llm = llm
        self.searcher = searcher or PostSearcher(index)
        self.top_k = index.settings.qa_top_k
        self.min_score = index.settings.qa_min_score
        config = index.settings
        self.floor = RelevanceFloor(config.qa_min_score, config.qa_sure_score,
                                    config.qa_min_name_share, config.qa_min_margin)
        self.selector = selector or _selector_for(index)

    # -- retrieval ------------------------------------------------------------------------------

    def sources(self, question: str, filters: SearchFilters | None = None,
                k: int | None = None) -> list[Source]:
        # Dense on purpose, whatever TGRAG_SEARCH_MODE says: the "nothing relevant" threshold
        # (qa_min_score) is a cosine similarity, and fused hybrid scores (RRF ≈ 0.03) are not.
        want = k or self.top_k
        # BACKGROUND_DEPTH posts at least: the floor compares each with the question's
        # background, found among them (rag.relevance.background).
        hits = self.searcher.search(question, filters or SearchFilters(),
                                    k=max(want, BACKGROUND_DEPTH), mode="dense")
        return floor_sources(self.floor, question, hits, want, self._full_text)

    def _full_text(self, hit: PostHit) -> str:
        try:
            text = self.index.post_text(hit.id)
        except Exception:  # a docstore hiccup costs context, not the answer
            text = None
        return text if text is not None else (hit.text or hit.snippet)

    # -- answers --------------------------------------------------------------------------------

    def ask(self, question: str, filters: SearchFilters | None = None,
            k: int | None = None) -> Answer:
        sources = self.sources(question, filters, k)
        if not sources:
            return Answer(NOT_FOUND, "not_found", [])
        if self.llm is None:
            return extractive_answer(question, sources, self.selector)
        try:
            response = self.llm.chat(self._messages(question, sources))
        except TgragError:
            LLM_CALLS.inc("chat", "error")
            raise
        except Exception as exc:  # other LLM backends raise their own errors
            LLM_CALLS.inc("chat", "error")
            raise _llm_failed(exc) from exc
        if finish_reason(response) == "blacklist":
            LLM_CALLS.inc("chat", "refused")
            return extractive_answer(question, sources, self.selector)
        LLM_CALLS.inc("chat", "ok")
        text, removed = clean_citations(response.message.content or "", len(sources))
        return Answer(text.strip(), "generative", sources, removed)

    def stream(self, question: str, filters: SearchFilters | None = None,
               k: int | None = None) -> Iterator[QAEvent]:
        """Tokens as they come, then the sources, then the whole answer (``done``)."""
        sources = self.sources(question, filters, k)
        if not sources or self.llm is None:
            answer = (extractive_answer(question, sources, self.selector) if sources
                      else Answer(NOT_FOUND, "not_found", []))
            yield QAEvent("token", answer.answer)
            yield QAEvent("sources", [s.to_dict() for s in answer.sources])
            yield QAEvent("done", answer.to_dict())
            return
        filt = CitationFilter(len(sources))
        text = ""
        refused = False
        try:
            for chunk in self.llm.stream_chat(self._messages(question, sources)):
                if finish_reason(chunk) == "blacklist":
                    refused = True
                    break
                out = filt.feed(chunk.delta or "")
                if out:
                    text += out
                    yield QAEvent("token", out)
        except TgragError:
            LLM_CALLS.inc("stream", "error")
            raise
        except Exception as exc:
            LLM_CALLS.inc("stream", "error")
            raise _llm_failed(exc) from exc
        LLM_CALLS.inc("stream", "refused" if refused else "ok")
        if refused:
            answer = extractive_answer(question, sources, self.selector)
            # The refusal text may already be partly out; say plainly what follows.
            yield QAEvent("token", ("\n\n" if text else "") + answer.answer)
        else:
            rest = filt.flush()
            if rest:
                text += rest
                yield QAEvent("token", rest)
            answer = Answer(text.strip(), "generative", sources, filt.removed)
        yield QAEvent("sources", [s.to_dict() for s in sources])
        yield QAEvent("done", answer.to_dict())

    def _messages(self, question: str, sources: list[Source]) -> list[ChatMessage]:
        blocks = []
        for s in sources:
            h = s.hit
            who = h.channel_title or h.channel or str(h.channel_id)
            if h.channel:
                who += f" (@{h.channel})"
            blocks.append(f"[{s.n}] {who}, {h.date_iso[:10]}\n{s.text}")
        user = "Источники:\n\n" + "\n\n".join(blocks) + f"\n\nВопрос: {question}"
        return [ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT),
                ChatMessage(role=MessageRole.USER, content=user)]


def floor_sources(floor: RelevanceFloor, question: str, hits: list[PostHit], want: int,
                  text_of: Callable[[PostHit], str]) -> list[Source]:
    """The first ``want`` hits the relevance floor keeps, numbered 1…, with their texts.

    ``hits``: the dense hits, best first (``BACKGROUND_DEPTH`` when the index has them);
    ``text_of`` gives a post's whole text (the floor reads it, the LLM gets its start).
    """
    level = background([h.score for h in hits])
    # The floor (rag.relevance): the dense score, and below TGRAG_QA_SURE_SCORE standing out
    # from the background and the question's figures and names in the post's whole text.
    specifics = floor.specifics(question)
    kept: list[tuple[PostHit, str]] = []
    for h in hits[:want]:
        if h.score < floor.min_score:
            continue
        text = text_of(h)
        if floor.keeps(question, h.score, text, specifics, level):
            kept.append((h, text))
    return [Source(n=i, hit=h, text=text[:SOURCE_CHARS]) for i, (h, text) in enumerate(kept, 1)]


# -- extractive mode ------------------------------------------------------------------------------


def _selector_for(index: Index) -> SentenceSelector:
    """Sentences scored with the index's own embedding model (lexically only without one)."""
    embedding = getattr(index, "embedding", None)
    if embedding is None:
        return SentenceSelector()
    model = embedding.model
    return SentenceSelector(embedding.embed_query, model.get_text_embedding_batch)


def _llm_failed(exc: Exception) -> LLMError:
    return LLMError(f"the LLM failed: {exc}", hint="check TGRAG_LLM and its settings")


def extractive_answer(question: str, sources: list[Source],
                      selector: SentenceSelector | None = None) -> Answer:
    """The sentences of the sources that answer the question, each cited (``rag.sentences``).

    A story question ("что случилось …") gets one sentence per post in date order, each with its
    date, newest first when it asks about "now"; otherwise the best sentence and at most one more.
    """
    selector = selector or SentenceSelector()
    passages = [Passage(s.n, s.text, s.hit.date) for s in sources]
    chosen = selector.answer(question, passages)
    if not chosen.picks:  # every sentence was a link, a header or a hashtag line
        return Answer(f"{EXTRACTIVE_PREFIX}: {_trim(sources[0].hit.snippet)} [{sources[0].n}]",
                      "extractive", sources)
    if chosen.dated:
        order = "сначала новые" if chosen.intent.newest_first else "по датам"
        text = f"{EXTRACTIVE_PREFIX}, {order}:\n{cite(chosen.picks, dated=True)}"
    else:
        text = f"{EXTRACTIVE_PREFIX}: {cite(chosen.picks)}"
    return Answer(text, "extractive", sources)


def _trim(sentence: str, limit: int = 300) -> str:
    sentence = " ".join(sentence.split())
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "…"
