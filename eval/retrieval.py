"""Retrieval evaluation on a BEIR dataset through the real ingestion pipeline and retriever.

1. The corpus becomes posts (channel 0, message id = 1-based ordinal in ``corpus.jsonl``, text =
   title + text) and goes through :class:`~ingest.pipeline.PostPipeline` into an embedded Qdrant
   and Redis under ``<data_dir>/eval/<key>``, ``key`` hashing the corpus bytes, the embedding
   model and the sparse encoder settings.  Re-runs find every post unchanged and embed nothing.
2. Each query fetches one dense and one sparse candidate list (posts, ``depth`` each) through
   :class:`~rag.hybrid.HybridRetriever`; they are cached next to the index, so trying another
   fusion costs no Qdrant query.  ``hybrid`` is computed from the same lists with
   :func:`rag.hybrid.fuse` — exactly what search does.
3. Metrics by ``ranx`` (nDCG@10, MRR@10, Recall@1/10/100) and a paired two-sided t-test between
   every pair of modes (``ranx.compare``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eval.beir import BeirDataset, load_beir
from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.errors import InputError
from rag.hybrid import MODES, FusionConfig, HybridRetriever, fuse
from rag.index import Index
from rag.settings import Settings
from rag.sparse import SparseEncoder

log = logging.getLogger("tgrag.eval")

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")
RUN_DEPTH = 100  # posts per query in a run: Recall@100 needs 100
EVAL_CHANNEL = 0
SIGNIFICANCE = 0.05
Ranked = list[tuple[str, float]]


@dataclass
class Candidates:
    """Per query: the dense and the sparse post lists (BEIR doc ids, best first)."""

    dense: dict[str, Ranked] = field(default_factory=dict)
    sparse: dict[str, Ranked] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class EvalResult:
    dataset: str
    queries: int
    docs: int
    metrics: dict[str, dict[str, float]]  # mode → metric → value
    pvalues: dict[str, dict[str, dict[str, float]]]  # mode → other mode → metric → p
    fusion: FusionConfig
    index_seconds: float = 0.0
    query_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The contract shape, plus ``fusion`` and ``pvalues`` for the curious."""
        return {
            "dataset": self.dataset,
            "queries": self.queries,
            "docs": self.docs,
            "modes": {m: {k: round(v, 4) for k, v in ms.items()} for m, ms in self.metrics.items()},
            "fusion": asdict(self.fusion),
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
        note = (f"\n{self.dataset}: {self.queries} queries, {self.docs} docs; † = differs from "
                f"dense, paired t-test p < {SIGNIFICANCE}")
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


def collect(index: Index, ds: BeirDataset, depth: int,
            on_progress: Callable[[int, int], None] | None = None) -> Candidates:
    """Dense and sparse candidates for every query, cached per (index, queries, depth)."""
    ids = list(ds.corpus)  # ordinal n ↔ ids[n - 1]
    key = hashlib.sha256(json.dumps([sorted(ds.queries.items()), depth]).encode()).hexdigest()
    path = index.settings.data_dir / f"candidates-{key[:16]}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Candidates({q: [tuple(x) for x in v] for q, v in data["dense"].items()},
                          {q: [tuple(x) for x in v] for q, v in data["sparse"].items()},
                          data["seconds"])
    retriever = HybridRetriever(index.store, index.embedding.model.get_query_embedding)
    out = Candidates()
    started = time.perf_counter()

    def beir_ids(hits: Sequence[tuple[str, Any]]) -> Ranked:
        return [(ids[int(doc_id.rsplit(":", 1)[1]) - 1], float(p.score)) for doc_id, p in hits]

    for n, (qid, text) in enumerate(ds.queries.items(), start=1):
        out.dense[qid] = beir_ids(retriever.dense(text, None, depth))
        out.sparse[qid] = beir_ids(retriever.sparse(text, None, depth))
        if on_progress:
            on_progress(n, len(ds.queries))
    out.seconds = time.perf_counter() - started
    path.write_text(json.dumps(asdict(out), ensure_ascii=False), encoding="utf-8")
    return out


def make_runs(cands: Candidates, modes: Sequence[str], fusion: FusionConfig,
              k: int = RUN_DEPTH) -> dict[str, dict[str, dict[str, float]]]:
    """mode → query → doc → score, top ``k`` per query."""
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        for qid in cands.dense:
            if mode == "dense":
                ranked = cands.dense[qid]
            elif mode == "sparse":
                ranked = cands.sparse[qid]
            else:
                ranked = fuse(cands.dense[qid], cands.sparse[qid], fusion)
            # Positional scores: ranx re-sorts by score, and the fused scores may tie.
            top = ranked[:k]
            run[qid] = {d: float(len(top) - i) for i, (d, _) in enumerate(top)}
        runs[mode] = run
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
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"unknown mode(s) {', '.join(bad) or '(none)'}",
                         hint="--modes takes a comma-separated subset of dense,sparse,hybrid")
    return list(dict.fromkeys(modes))


def evaluate_retrieval(
    dataset: Path | str,
    settings: Settings,
    modes: Sequence[str] = MODES,
    limit: int | None = None,
    fusion: FusionConfig | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvalResult:
    """Index (or reuse) the dataset, retrieve with every mode and score the runs."""
    ds = load_beir(dataset).limited(limit)
    modes = parse_modes(modes)
    fusion = fusion or FusionConfig.from_settings(settings)
    started = time.perf_counter()
    index = index_dataset(ds, settings, (lambda d, t: on_progress("index", d, t))
                          if on_progress else None)
    try:
        index_seconds = time.perf_counter() - started
        cands = collect(index, ds, max(RUN_DEPTH, fusion.depth),
                        (lambda d, t: on_progress("query", d, t)) if on_progress else None)
    finally:
        index.close()
    metrics, pvalues = score(ds, make_runs(cands, modes, fusion))
    return EvalResult(ds.name, len(ds.queries), len(ds.corpus), metrics, pvalues, fusion,
                      index_seconds, cands.seconds)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "dataset"
