"""BEIR-format retrieval datasets: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv``.

``corpus.jsonl`` lines are ``{"_id", "title"?, "text"}``, ``queries.jsonl`` lines ``{"_id",
"text"}``, ``qrels.tsv`` has ``query-id  corpus-id  score`` columns (header line optional).  Every
problem is an :class:`~rag.errors.InputError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import InputError

FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv")


@dataclass(frozen=True)
class BeirDoc:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What gets indexed: the title (when there is one) as the first line, then the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class BeirDataset:
    name: str
    path: Path
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]  # only queries with at least one relevant document
    qrels: dict[str, dict[str, int]]
    corpus_sha256: str  # identifies the corpus for index caching

    def limited(self, n: int | None) -> BeirDataset:
        """The first ``n`` queries (file order) with their qrels; the corpus stays whole."""
        if n is None or n >= len(self.queries):
            return self
        if n < 1:
            raise InputError("--limit must be ≥ 1")
        keep = list(self.queries)[:n]
        return BeirDataset(self.name, self.path, self.corpus,
                           {q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep},
                           self.corpus_sha256)


def load_beir(path: Path | str) -> BeirDataset:
    """Load and check a BEIR folder."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist",
                         hint="pass a folder with corpus.jsonl, queries.jsonl and qrels.tsv")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise InputError(f"dataset folder {root} lacks {', '.join(missing)}",
                         hint="a BEIR dataset has corpus.jsonl, queries.jsonl and qrels.tsv")
    corpus_bytes = (root / "corpus.jsonl").read_bytes()
    corpus: dict[str, BeirDoc] = {}
    for n, rec in _jsonl(root / "corpus.jsonl", corpus_bytes):
        doc_id, text = _field(rec, "_id", root / "corpus.jsonl", n), rec.get("text")
        if not isinstance(text, str):
            raise InputError(f"{root / 'corpus.jsonl'} line {n}: 'text' must be a string")
        if doc_id in corpus:
            raise InputError(f"{root / 'corpus.jsonl'} line {n}: duplicate _id {doc_id!r}")
        corpus[doc_id] = BeirDoc(doc_id, str(rec.get("title") or ""), text)
    queries: dict[str, str] = {}
    qfile = root / "queries.jsonl"
    for n, rec in _jsonl(qfile, qfile.read_bytes()):
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{qfile} line {n}: 'text' must be a non-empty string")
        queries[_field(rec, "_id", qfile, n)] = text
    qrels = _qrels(root / "qrels.tsv", queries, corpus)
    if not corpus:
        raise InputError(f"{root / 'corpus.jsonl'} is empty")
    if not qrels:
        raise InputError(f"{root / 'qrels.tsv'} has no relevant pairs")
    return BeirDataset(
        name=root.name if root.name not in ("", ".") else root.resolve().name,
        path=root,
        corpus=corpus,
        queries={q: t for q, t in queries.items() if q in qrels},
        qrels=qrels,
        corpus_sha256=hashlib.sha256(corpus_bytes).hexdigest(),
    )


def _jsonl(path: Path, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    out = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8: {exc}") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {n}: malformed JSON ({exc.msg})") from exc
        if not isinstance(rec, dict):
            raise InputError(f"{path} line {n}: expected a JSON object")
        out.append((n, rec))
    return out


def _field(rec: dict[str, Any], key: str, path: Path, n: int) -> str:
    value = rec.get(key)
    if not isinstance(value, str | int) or str(value) == "":
        raise InputError(f"{path} line {n}: missing {key!r}")
    return str(value)


def _qrels(path: Path, queries: dict[str, str], corpus: dict[str, BeirDoc]
           ) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if n == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(cols) != 3:
            raise InputError(f"{path} line {n}: expected 3 tab-separated columns, got {len(cols)}")
        qid, did, score = (c.strip() for c in cols)
        try:
            rel = int(float(score))
        except ValueError:
            raise InputError(f"{path} line {n}: score {score!r} is not a number") from None
        if qid not in queries:
            raise InputError(f"{path} line {n}: query {qid!r} is not in queries.jsonl")
        if did not in corpus:
            raise InputError(f"{path} line {n}: document {did!r} is not in corpus.jsonl")
        if rel > 0:
            qrels.setdefault(qid, {})[did] = rel
    return qrels
