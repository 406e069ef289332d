"""Retrieval evaluation on a BEIR dataset through the real ingestion pipeline and the real search.

1. The corpus becomes posts (channel 0, message id = 1-based ordinal in ``corpus.jsonl``, text =
   title + text) and goes through :class:`~ingest.pipeline.PostPipeline` into an embedded store
   and Redis under ``<data_dir>/eval/<key>``, ``key`` hashing the corpus bytes, the embedding
   model and the sparse encoder settings.  Re-runs find every post unchanged and embed nothing.
2. Each query is ranked by :meth:`rag.search.PostSearcher.rank` — the ranking ``tgrag search``
   and the API return, near-duplicate collapsing included (``--no-collapse`` switches it off, and
   the result says which) — taking the top ``RUN_DEPTH`` posts of each mode.  A hit that stands
   for a group of copies counts as the post it shows, as a user sees it.
3. Metrics by ``ranx`` (nDCG@10, MRR@10, Recall@1/10/100) and a paired two-sided t-test between
   every pair of modes (``ranx.compare``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eval.beir import BeirDataset, load_beir
from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.errors import InputError
from rag.hybrid import MODES, FusionConfig, validate_mode
from rag.ids import parse_doc_id
from rag.index import Index
from rag.search import MAX_K, PostSearcher
from rag.settings import Settings
from rag.sparse import SparseEncoder

log = logging.getLogger("tgrag.eval")

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")
RUN_DEPTH = MAX_K  # posts per query in a run: Recall@100 needs 100
EVAL_CHANNEL = 0
SIGNIFICANCE = 0.05
Ranked = list[tuple[str, float]]


@dataclass
class EvalResult:
    dataset: str
    queries: int
    docs: int
    metrics: dict[str, dict[str, float]]  # mode → metric → value
    pvalues: dict[str, dict[str, dict[str, float]]]  # mode → other mode → metric → p
    fusion: FusionConfig
    collapse_duplicates: bool = True
    index_seconds: float = 0.0
    query_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The contract shape, plus how search was configured and ``pvalues`` for the curious."""
        return {
            "dataset": self.dataset,
            "queries": self.queries,
            "docs": self.docs,
            "modes": {m: {k: round(v, 4) for k, v in ms.items()} for m, ms in self.metrics.items()},
            "fusion": asdict(self.fusion),
            "collapse_duplicates": self.collapse_duplicates,
            "pvalues": self.pvalues,
        }

    def to_markdown(self) -> str:
        """Metrics per mode; ``†`` marks a significant difference (p < 0.05) from ``dense``."""
        head = "| mode | " + " | ".join(METRICS) + " |"
        rows = [head, "|" + "---|" * (len(METRICS) + 1)]
        for mode, ms in self.metrics.items():
            cells = []
            for metric in METRICS:
                p = self.pvalues.get(mode, {}).get("dense", {}).get(metric)
                mark = "†" if p is not None and p < SIGNIFICANCE else ""
                cells.append(f"{ms[metric]:.4f}{mark}")
            rows.append(f"| {mode} | " + " | ".join(cells) + " |")
        copies = "collapsed" if self.collapse_duplicates else "not collapsed"
        note = (f"\n{self.dataset}: {self.queries} queries, {self.docs} docs; near-duplicates "
                f"{copies}; † = differs from dense, paired t-test p < {SIGNIFICANCE}")
        return "\n".join(rows) + note


# -- indexing -------------------------------------------------------------------------------------


def cache_key(ds: BeirDataset, settings: Settings, encoder: SparseEncoder) -> str:
    parts = [ds.corpus_sha256, settings.embed_backend, settings.embed_model_name,
             str(settings.chunk_tokens), encoder.model_dump_json()]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def eval_settings(settings: Settings, ds: BeirDataset, encoder: SparseEncoder) -> Settings:
    """Embedded Qdrant and Redis in a folder of their own, whatever the user's settings say."""
    folder = settings.data_dir / "eval" / f"{_slug(ds.name)}-{cache_key(ds, settings, encoder)}"
    return settings.model_copy(update={
        "data_dir": folder, "qdrant_url": None, "redis_url": None, "collection": "eval",
    })


def to_posts(ds: BeirDataset) -> list[Post]:
    return [Post(channel_id=EVAL_CHANNEL, message_id=n, date=0, text=doc.full_text)
            for n, doc in enumerate(ds.corpus.values(), start=1)]


def index_dataset(ds: BeirDataset, settings: Settings,
                  on_progress: Callable[[int, int], None] | None = None) -> Index:
    """Open (and fill, if needed) the cached index of ``ds``; the caller closes it."""
    encoder = SparseEncoder()
    index = Index.open(eval_settings(settings, ds, encoder), purpose="tgrag eval")
    try:
        total = len(ds.corpus)
        report = PostPipeline(index).ingest(
            to_posts(ds), on_progress=(lambda done, _r: on_progress(done, total))
            if on_progress else None,
        )
        log.info("eval index ready", extra={"report": report.to_dict()})
    except BaseException:
        index.close()
        raise
    return index


# -- retrieval ------------------------------------------------------------------------------------


def rank_queries(index: Index, ds: BeirDataset, modes: Sequence[str], fusion: FusionConfig,
                 collapse_duplicates: bool, depth: int = RUN_DEPTH,
                 on_progress: Callable[[int, int], None] | None = None,
                 ) -> dict[str, dict[str, dict[str, float]]]:
    """mode → query → BEIR doc → score: the top ``depth`` posts ``PostSearcher.rank`` returns.

    Scores are positional (ranx re-sorts by score, and fused scores may tie)."""
    ids = list(ds.corpus)  # ordinal n ↔ ids[n - 1] (to_posts)
    searcher = PostSearcher(index, fusion=fusion, collapse_duplicates=collapse_duplicates)
    runs: dict[str, dict[str, dict[str, float]]] = {m: {} for m in modes}
    for n, (qid, text) in enumerate(ds.queries.items(), start=1):
        for mode in modes:
            try:
                page = searcher.rank(text, k=depth, mode=mode)
            except InputError as err:  # an empty or overlong query: no results, counted as such
                log.warning("query %s not searchable: %s", qid, err)
                page = []  # type: ignore[assignment]
            top = [ids[parse_doc_id(hit.id)[2] - 1] for hit in page]
            runs[mode][qid] = {d: float(len(top) - i) for i, d in enumerate(top)}
        if on_progress:
            on_progress(n, len(ds.queries))
    return runs


# -- metrics --------------------------------------------------------------------------------------


def score(ds: BeirDataset, runs: dict[str, dict[str, dict[str, float]]]
          ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """Metrics per mode and paired t-test p-values between modes (ranx)."""
    from ranx import Qrels, Run, compare

    qrels = Qrels(ds.qrels)
    ranx_runs = []
    for mode, run in runs.items():
        # ranx rejects a query without results; give it a document that is never relevant.
        ranx_runs.append(Run({q: (r or {"__none__": 0.0}) for q, r in run.items()}, name=mode))
    report = compare(qrels, ranx_runs, list(METRICS), stat_test="student", max_p=SIGNIFICANCE)
    data = report.to_dict()
    metrics = {m: {k: float(v) for k, v in data[m]["scores"].items()} for m in runs}
    pvalues = {m: {o: {k: float(v) for k, v in ps.items()}
                   for o, ps in data[m].get("comparisons", {}).items()} for m in runs}
    return metrics, pvalues


def bar_chart(result: EvalResult, path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per mode."""
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    modes = list(result.metrics)
    width = 0.8 / max(len(modes), 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, mode in enumerate(modes):
        xs = [j + i * width for j in range(len(METRICS))]
        ys = [result.metrics[mode][m] for m in METRICS]
        bars = ax.bar(xs, ys, width, label=mode)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(METRICS))], METRICS)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{result.dataset}: {result.queries} queries, {result.docs} docs")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the whole run --------------------------------------------------------------------------------


def parse_modes(value: str | Sequence[str]) -> list[str]:
    modes = [m.strip() for m in (value.split(",") if isinstance(value, str) else value)]
    modes = [m for m in modes if m]
    if not modes:
        raise InputError("no mode given", hint="--modes takes a comma-separated subset of "
                         + ",".join(MODES))
    for mode in modes:
        try:
            validate_mode(mode)
        except InputError as err:
            raise InputError(f"unknown mode(s) {', '.join(m for m in modes if m not in MODES)}",
                             hint="--modes takes a comma-separated subset of "
                             + ",".join(MODES)) from err
    return list(dict.fromkeys(modes))


# What the `eval` extra brings: the metrics (ranx) and the chart (matplotlib).
EVAL_EXTRA_MODULES = ("ranx", "matplotlib")


def require_eval_extra() -> None:
    """Raise :class:`InputError` naming the extra when a module of it is not installed."""
    missing = [name for name in EVAL_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"tgrag eval retrieval needs the eval extra: {', '.join(missing)} is not installed",
            hint="pip install 'tgrag[eval]' (in a checkout: pip install -e '.[eval]')",
        )


def evaluate_retrieval(
    dataset: Path | str,
    settings: Settings,
    modes: Sequence[str] = MODES,
    limit: int | None = None,
    fusion: FusionConfig | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    collapse_duplicates: bool | None = None,
) -> EvalResult:
    """Index (or reuse) the dataset, rank every query with every mode and score the runs.

    ``fusion`` and ``collapse_duplicates`` default to the settings, i.e. to what search does."""
    require_eval_extra()  # before the indexing, which can take hours
    ds = load_beir(dataset).limited(limit)
    modes = parse_modes(modes)
    fusion = fusion or FusionConfig.from_settings(settings)
    collapse = settings.collapse_duplicates if collapse_duplicates is None else collapse_duplicates
    started = time.perf_counter()
    index = index_dataset(ds, settings, (lambda d, t: on_progress("index", d, t))
                          if on_progress else None)
    try:
        index_seconds = time.perf_counter() - started
        started = time.perf_counter()
        runs = rank_queries(index, ds, modes, fusion, collapse, RUN_DEPTH,
                            (lambda d, t: on_progress("query", d, t)) if on_progress else None)
        query_seconds = time.perf_counter() - started
    finally:
        index.close()
    metrics, pvalues = score(ds, runs)
    return EvalResult(ds.name, len(ds.queries), len(ds.corpus), metrics, pvalues, fusion,
                      collapse, index_seconds, query_seconds)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "dataset"
