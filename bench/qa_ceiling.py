"""How far a linear sentence ranker can go on the selector's own signals (docs/eval.md, 7.3).

For every answered question of the replay dumps (``bench/qa_replay.py dump``; the floor of
``TGRAG_QA_*`` picks the sources, as ``tgrag ask`` does), every candidate sentence of its
sources gets the selector's signals (``rag.sentences.SentenceSelector``: lexical match, its own
and read with the sentences before it, the asked-for type, lead sentence, post rank, restating
the question, e5 cosine to the question for every candidate, …) and a label: it holds a gold
answer.  A linear ranker (a softmax over a question's candidates, fitted by gradient descent) is
fitted on one id-parity half and tested on the other, with

* ``rule``: the selector's own weights on the same signals (dense scores for every candidate,
  where the selector embeds only its 5 best lexical ones);
* ``fitted-6``: the rule's six signals, weights fitted;
* ``fitted-16``: all sixteen signals below, weights fitted.

The figure is the share of answered questions whose best candidate holds the gold answer (the
first cited sentence before it is cut to the length budget).  It bounds what re-weighting these
signals can win: a fitted ranker that barely beats the rule on the held-out half says the rule
is at their linear optimum.

Usage: python bench/qa_ceiling.py data/bench/paragraphs.pkl data/bench/news1500.pkl
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))  # after the packages: bench/ingest.py is no package

from qa_replay import half  # noqa: E402 - the replay's id-parity halves

from eval.answers import contains_gold  # noqa: E402
from rag.qa import floor_sources  # noqa: E402
from rag.relevance import RelevanceFloor  # noqa: E402
from rag.sentences import (  # noqa: E402
    Passage,
    SentenceSelector,
    _term_weights,
    _unit,
    answer_tokens,
    question_intent,
)
from rag.settings import Settings  # noqa: E402

SIGNALS = ["lexical", "own", "context", "typed", "lead", "rank", "dense_gap", "dense_mean_gap",
           "novelty", "restates", "previous_own", "next_own", "names_held", "others_held",
           "log_words", "position"]
RULE = ["lexical", "typed", "lead", "rank", "dense_gap", "restates"]


def signals(selector: SentenceSelector, question: str, passages: list[Passage],
            query: np.ndarray, vectors: dict[str, list[float]]) -> tuple[np.ndarray, list[str]]:
    """One row of SIGNALS per candidate sentence (the selector's own computations)."""
    cfg = selector.config
    intent = question_intent(question)
    cands = selector._candidates(passages)  # noqa: SLF001 - the selector's internals, measured
    if not cands:
        return np.zeros((0, len(SIGNALS))), []
    terms = selector.question_terms(question)
    weights = _term_weights(terms, cands)
    names = selector._name_stems(question) & weights.keys()  # noqa: SLF001
    for t in names:
        weights[t] *= cfg.name_weight
    total = sum(weights.values()) or 1.0
    name_total = sum(weights[t] for t in names) or 1.0
    other_total = sum(w for t, w in weights.items() if t not in names) or 1.0
    ranks = {p.n: i for i, p in enumerate(passages)}
    kind = intent.name_kind or intent.wants or ""
    asked = selector._forms(answer_tokens(question, kind)) if kind else set()  # noqa: SLF001
    wanted = frozenset(terms)
    own = [sum(w for t, w in weights.items() if t in c.stems) / total for c in cands]
    dense = []
    for c in cands:
        v = vectors.get(c.text)
        dense.append(float(query @ np.asarray(_unit(v))) if v is not None else np.nan)
    known = [d for d in dense if not np.isnan(d)] or [0.0]
    best, mean = max(known), float(np.mean(known))
    rows = []
    for i, c in enumerate(cands):
        context = selector._context(i, cands, weights, total)  # noqa: SLF001
        typed = bool(kind and not intent.story and selector._forms(  # noqa: SLF001
            answer_tokens(c.text, kind)) - asked)
        novelty = len(c.stems - wanted) / len(c.stems) if c.stems else 1.0
        same_prev = i > 0 and cands[i - 1].n == c.n
        same_next = i + 1 < len(cands) and cands[i + 1].n == c.n
        d = best - 0.1 if np.isnan(dense[i]) else dense[i]
        rows.append([
            max(own[i], context), own[i], context, float(typed), float(c.position == 0),
            ranks.get(c.n, 0), d - best, d - mean, novelty,
            float(novelty < cfg.min_novelty and not typed and not intent.story),
            own[i - 1] if same_prev else 0.0, own[i + 1] if same_next else 0.0,
            sum(weights[t] for t in names if t in c.stems) / name_total if names else 0.0,
            sum(w for t, w in weights.items() if t not in names and t in c.stems) / other_total,
            float(np.log(max(1, len(c.text.split())))), min(c.position, 10) / 10,
        ])
    return np.asarray(rows, dtype=float), [c.text for c in cands]


def questions(dump: Path, settings: Settings) -> list[dict[str, Any]]:
    with dump.open("rb") as f:
        data = pickle.load(f)
    texts, vectors = data["texts"], data["vectors"]
    floor = RelevanceFloor(settings.qa_min_score, settings.qa_sure_score,
                           settings.qa_min_name_share, settings.qa_min_margin)
    selector = SentenceSelector()
    out = []
    for r in data["records"]:
        if not r["gold"]:
            continue
        sources = floor_sources(floor, r["question"], r["hits"], settings.qa_top_k,
                                lambda h: texts[h.id])
        if not sources:
            continue
        passages = [Passage(s.n, s.text, s.hit.date) for s in sources]
        query = np.asarray(_unit(r["query_vector"]))
        x, sentences = signals(selector, r["question"], passages, query, vectors)
        if len(sentences):
            y = np.asarray([contains_gold(s, r["gold"]) for s in sentences])
            out.append({"half": half(r["id"]), "x": x, "y": y})
    return out


def rule_score(x: np.ndarray) -> np.ndarray:
    """The selector's weights (SelectorConfig defaults); a restatement is as good as dropped."""
    col = {name: x[:, SIGNALS.index(name)] for name in RULE}
    return (col["lexical"] + 0.5 * col["typed"] + 0.05 * col["lead"] - 0.02 * col["rank"]
            + 4.0 * col["dense_gap"] - 10.0 * col["restates"])


def fit(train: list[dict[str, Any]], names: list[str], steps: int = 400, rate: float = 0.5,
        l2: float = 1e-3) -> Any:
    """A listwise linear ranker: softmax over a question's candidates, the gold ones the target."""
    idx = [SIGNALS.index(n) for n in names]
    stacked = np.concatenate([q["x"][:, idx] for q in train])
    mu, sd = stacked.mean(0), stacked.std(0) + 1e-9
    data = [((q["x"][:, idx] - mu) / sd, q["y"]) for q in train if q["y"].any()]
    w = np.zeros(len(idx))
    for _ in range(steps):
        grad = np.zeros_like(w)
        for z, y in data:
            s = z @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            target = p * y / (p * y).sum()
            grad += z.T @ (p - target)
        w -= rate * (grad / len(data) + l2 * w)
    return lambda x: ((x[:, idx] - mu) / sd) @ w


def top1(qs: list[dict[str, Any]], score: Any) -> float:
    return float(np.mean([q["y"][int(np.argmax(score(q["x"])))] for q in qs])) if qs else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dumps", type=Path, nargs="+")
    args = parser.parse_args()
    settings = Settings()
    sets = {path.stem: questions(path, settings) for path in args.dumps}
    print("| set | tested on | answered | rule | fitted-6 | fitted-16 |")
    print("|---|---|---|---|---|---|")
    for train_half, test_half in (("even", "odd"), ("odd", "even")):
        # Fitted on every set's training half pooled: the largest set (xquad) leads.
        train = [q for qs in sets.values() for q in qs if q["half"] == train_half]
        six, sixteen = fit(train, RULE), fit(train, SIGNALS)
        for name, qs in sets.items():
            test = [q for q in qs if q["half"] == test_half]
            print(f"| {name} | {test_half} | {len(test)} | {100 * top1(test, rule_score):.1f}% "
                  f"| {100 * top1(test, six):.1f}% | {100 * top1(test, sixteen):.1f}% |")


if __name__ == "__main__":
    main()
