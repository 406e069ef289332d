"""Answer quality: the real QA over a BEIR dataset, graded by the configured LLM as a judge.

``tgrag eval answers --dataset DIR``:

1. The dataset's corpus is indexed through the real pipeline into the same cached throwaway index
   ``tgrag eval retrieval`` uses (:func:`eval.retrieval.index_dataset`), not into the user's index:
   the dataset defines the world, so a run is reproducible, works for public sets (danetqa,
   xquad_r_en) and for ``eval generate`` output alike, and never depends on what was synced since.
2. Each query goes through :class:`rag.qa.QAEngine` exactly as ``tgrag ask`` runs it (dense
   retrieval, ``TGRAG_QA_TOP_K``, ``TGRAG_QA_MIN_SCORE``, the same prompt and citation cleaning).
3. The same LLM, as judge (:data:`JUDGE_PROMPT`), sees the question, the numbered sources the QA
   was given, the answer and the gold answer when there is one, and returns strict JSON:
   ``faithfulness`` (share of the answer's claims supported by the sources they cite, 0..1) and
   ``correctness`` (1 / 0.5 / 0 against the gold answer; ``null`` without one).

Gold answers come from ``queries.jsonl`` (``metadata.answer`` as ``eval generate`` writes it, or
``metadata.answers``) or from a ``qa.jsonl`` (``{"id", "answers": [...]}``) in the dataset folder
or its parent, which is how ``xquad_r_en`` ships them.  ``danetqa`` has none (its yes/no labels are
not in the BEIR export), so only faithfulness is graded there.

Means: faithfulness over judged answers; correctness over questions with a gold answer, a
"not found" answer counting 0 (no judge call: it claims nothing, so it has no faithfulness);
``source_hit`` = share of questions where a relevant post (qrels) was among the QA's sources.
QA or judge failures are counted and skipped; an unreadable verdict is asked for once more.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from eval.beir import BeirDataset, load_beir
from eval.llm_util import FailureGuard, chat_text, extract_json
from eval.retrieval import index_dataset
from rag.errors import LLMError
from rag.qa import CITATION, EXTRACTIVE_PREFIX, Answer, QAEngine
from rag.sentences import split_sentences
from rag.settings import Settings

JUDGE_TRIES = 2
METRICS = ("faithfulness", "correctness", "source_hit")
OFFLINE_METRICS = ("in_answer", "in_first_sentence", "answer_chars", "not_found",
                   "no_answer_not_found", "source_hit")

JUDGE_SYSTEM = ("Ты строгий и беспристрастный эксперт, который проверяет ответы поисковой системы. "
                "Отвечай только JSON.")
JUDGE_PROMPT = """Вопрос пользователя: {question}

Источники, которые получила система (ответ ссылается на них номерами в квадратных скобках):

{sources}

Ответ системы:
{answer}

Эталонный ответ: {gold}

Оцени ответ системы.
1. faithfulness: доля утверждений ответа, которые подтверждаются источниками, на которые они \
ссылаются, число от 0 до 1. Утверждение без ссылки или со ссылкой на источник, где этого нет, \
не подтверждено. Если ответ только сообщает, что в источниках ответа нет, faithfulness = 1.
2. correctness: {correctness_rule}
Вопрос, источники, ответ и эталон могут быть на разных языках (например, русском и английском): \
сравнивай смысл, а не язык и формулировки.

Ответь только JSON: {{"faithfulness": число, "correctness": {correctness_type}, \
"unsupported": ["неподтверждённые утверждения"], "reason": "одно предложение"}}"""
WITH_GOLD = ("совпадает ли ответ по смыслу с эталонным (годится любой из вариантов эталона): "
             "1 — да, 0.5 — частично, 0 — нет, противоречит или ответа нет.")
NO_GOLD = "эталона нет, поставь null."
JUDGE_RETRY = ("Не удалось прочитать оценку. Ответь только JSON-объектом с полями faithfulness, "
               "correctness, unsupported и reason, без пояснений.")


@dataclass
class Verdict:
    faithfulness: float
    correctness: float | None
    unsupported: list[str] = field(default_factory=list)
    reason: str = ""


def _score(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is not a number: {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} is outside 0..1: {value!r}")
    return float(value)


def parse_verdict(text: str, has_gold: bool) -> Verdict:
    """The judge's JSON verdict (bare, fenced or after a preamble); ``ValueError`` otherwise."""
    obj = extract_json(text)
    faithfulness = _score(obj.get("faithfulness"), "faithfulness")
    correctness = _score(obj.get("correctness"), "correctness") if has_gold else None
    unsupported = obj.get("unsupported") or []
    if not isinstance(unsupported, list):
        unsupported = [unsupported]
    reason = obj.get("reason")
    return Verdict(faithfulness, correctness, [str(u) for u in unsupported],
                   reason if isinstance(reason, str) else "")


def judge(llm: LLM, question: str, answer: Answer, gold: list[str],
          tries: int = JUDGE_TRIES) -> Verdict:
    """Grade one answer; ``ValueError`` when every reply was unreadable, ``LLMError`` on failure."""
    sources = "\n\n".join(f"[{s.n}] {s.text}" for s in answer.sources) or "(нет источников)"
    prompt = JUDGE_PROMPT.format(
        question=question, sources=sources, answer=answer.answer,
        gold=" / ".join(gold) if gold else "нет",
        correctness_rule=WITH_GOLD if gold else NO_GOLD,
        correctness_type="число" if gold else "null",
    )
    messages = [ChatMessage(role=MessageRole.SYSTEM, content=JUDGE_SYSTEM),
                ChatMessage(role=MessageRole.USER, content=prompt)]
    problem = "no reply"
    for _ in range(max(1, tries)):
        reply, refused = chat_text(llm, messages)
        if refused:
            raise ValueError("the judge refused")
        try:
            return parse_verdict(reply, bool(gold))
        except ValueError as exc:
            problem = f"{exc}; reply: {reply[:200]!r}"
            messages += [ChatMessage(role=MessageRole.ASSISTANT, content=reply),
                         ChatMessage(role=MessageRole.USER, content=JUDGE_RETRY)]
    raise ValueError(f"unreadable verdict ({problem})")


# -- gold answers ---------------------------------------------------------------------------------


def load_gold(ds: BeirDataset) -> dict[str, list[str]]:
    """Query id → gold answers, from ``queries.jsonl`` metadata or a ``qa.jsonl`` (see above)."""
    gold: dict[str, list[str]] = {}
    for line in (ds.path / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        rec = _json_line(line)
        meta = rec.get("metadata") if rec else None
        if isinstance(meta, dict) and "_id" in rec:
            answers = _strings(meta.get("answers", meta.get("answer")))
            if answers:
                gold[str(rec["_id"])] = answers
    for qa in (ds.path / "qa.jsonl", ds.path.parent / "qa.jsonl"):
        if not qa.is_file():
            continue
        for line in qa.read_text(encoding="utf-8").splitlines():
            rec = _json_line(line)
            if rec and str(rec.get("id", "")) in ds.queries:
                answers = _strings(rec.get("answers", rec.get("answer")))
                if answers:
                    gold.setdefault(str(rec["id"]), answers)
        break
    return {q: a for q, a in gold.items() if q in ds.queries}


def load_no_answer(ds: BeirDataset) -> dict[str, str]:
    """Queries marked ``metadata.no_answer: true`` (the corpus holds no answer): id → text.

    They have no relevant document, so the BEIR loader (which keeps only queries with qrels)
    leaves them out; they are read here.
    """
    marked: dict[str, str] = {}
    for line in (ds.path / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        rec = _json_line(line)
        meta = rec.get("metadata") if rec else None
        text = rec.get("text") if rec else None
        if (isinstance(meta, dict) and meta.get("no_answer") is True and "_id" in rec
                and isinstance(text, str) and text.strip()):
            marked[str(rec["_id"])] = text
    return marked


# -- containment (offline mode) -------------------------------------------------------------------

_SPACES = re.compile(r"\s+")
_DATE_PREFIX = re.compile(r"^\d{2}\.\d{2}\.\d{4}:\s*")


def normalise(text: str) -> str:
    """Case, ``ё``, quotes, dashes and whitespace folded, for containment checks."""
    text = text.casefold().replace("ё", "е").replace("\u00a0", " ")
    text = text.translate(str.maketrans({"«": '"', "»": '"', "“": '"', "”": '"', "„": '"',
                                         "–": "-", "—": "-", "’": "'"}))
    return _SPACES.sub(" ", text).strip()


def contains_gold(text: str, gold: list[str]) -> bool:
    """Whether any gold answer occurs in ``text`` (see :func:`normalise`)."""
    body = normalise(text)
    return any(g and g in body for g in (normalise(a).strip(" .,;:") for a in gold))


def first_cited_sentence(answer: str) -> str:
    """The sentence before the answer's first ``[n]`` (the whole answer when nothing is cited).

    The extractive answer's "По найденным постам:" lead and a story's ``dd.mm.yyyy:`` date are
    not part of the sentence.
    """
    match = CITATION.search(answer)
    before = answer[:match.start()] if match else answer
    before = before.rsplit("\n", 1)[-1]
    if before.startswith(EXTRACTIVE_PREFIX):
        before = before.split(":", 1)[-1]
    before = _DATE_PREFIX.sub("", before.strip())
    sentences = split_sentences(before)
    return sentences[-1] if sentences else before.strip()


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return list(dict.fromkeys(str(v).strip() for v in values
                              if isinstance(v, str | int | float) and str(v).strip()))


# -- the run --------------------------------------------------------------------------------------


@dataclass
class AnswerItem:
    query_id: str
    question: str
    gold: list[str]
    answer: str = ""
    mode: str = ""  # generative | extractive | not_found | "" (the QA failed)
    sources: list[str] = field(default_factory=list)  # BEIR doc ids, in [n] order
    source_hit: bool | None = None
    faithfulness: float | None = None
    correctness: float | None = None
    unsupported: list[str] = field(default_factory=list)
    reason: str = ""
    error: str | None = None
    no_answer: bool = False  # the dataset says it holds no answer to this question
    in_answer: bool | None = None  # offline: a gold answer occurs in the answer
    in_first_sentence: bool | None = None  # ... in its first cited sentence
    seconds: float = 0.0  # the QA's time for this question


@dataclass
class AnswersResult:
    dataset: str
    docs: int
    items: list[AnswerItem]
    model: str = ""
    stopped_early: str | None = None
    index_seconds: float = 0.0
    seconds: float = 0.0
    offline: bool = False  # no LLM: extractive answers, graded by gold-answer containment

    def means(self) -> tuple[dict[str, float | None], dict[str, int]]:
        """Per metric: the mean (None when nothing was graded) and how many values it averages."""
        values: dict[str, list[float]] = {m: [] for m in METRICS}
        for it in self.items:
            if it.faithfulness is not None:
                values["faithfulness"].append(it.faithfulness)
            if it.correctness is not None:
                values["correctness"].append(it.correctness)
            if it.source_hit is not None:
                values["source_hit"].append(float(it.source_hit))
        return ({m: (sum(v) / len(v) if v else None) for m, v in values.items()},
                {m: len(v) for m, v in values.items()})

    def offline_means(self) -> tuple[dict[str, float | None], dict[str, int]]:
        """:data:`OFFLINE_METRICS`: means and how many values each averages (see the module)."""
        values: dict[str, list[float]] = {m: [] for m in OFFLINE_METRICS}
        for it in self.items:
            if it.mode == "":
                continue
            found = it.mode != "not_found"
            if it.no_answer:
                values["no_answer_not_found"].append(float(not found))
            else:
                values["not_found"].append(float(not found))
            if found:
                values["answer_chars"].append(float(len(it.answer)))
            if it.in_answer is not None:
                values["in_answer"].append(float(it.in_answer))
            if it.in_first_sentence is not None:
                values["in_first_sentence"].append(float(it.in_first_sentence))
            if it.source_hit is not None:
                values["source_hit"].append(float(it.source_hit))
        return ({m: (sum(v) / len(v) if v else None) for m, v in values.items()},
                {m: len(v) for m, v in values.items()})

    def counts(self) -> dict[str, int]:
        items = self.items
        return {
            "queries": len(items),
            "generative": sum(it.mode == "generative" for it in items),
            "extractive": sum(it.mode == "extractive" for it in items),
            "not_found": sum(it.mode == "not_found" for it in items),
            "qa_failed": sum(it.mode == "" for it in items),
            "judged": sum(it.faithfulness is not None for it in items),
            "judge_failed": sum(bool(it.mode) and it.mode != "not_found"
                                and it.faithfulness is None for it in items),
            "with_gold": sum(bool(it.gold) for it in items),
        }

    def to_json(self) -> dict[str, Any]:
        means, n = self.offline_means() if self.offline else self.means()
        counts = self.counts()
        if self.offline:
            counts = {k: v for k, v in counts.items() if k not in ("judged", "judge_failed")}
            counts["no_answer"] = sum(it.no_answer for it in self.items)
        return {
            "dataset": self.dataset, "queries": len(self.items), "docs": self.docs,
            "model": self.model, "grading": "offline" if self.offline else "judge",
            "seconds_per_answer": round(self.answer_seconds(), 4),
            "means": {m: (round(v, 4) if v is not None else None) for m, v in means.items()},
            "n": n, "counts": counts, "stopped_early": self.stopped_early,
            "items": [asdict(it) for it in self.items],
        }

    def answer_seconds(self) -> float:
        """Mean QA time per question (retrieval and answer; the judge not included)."""
        done = [it.seconds for it in self.items if it.mode]
        return sum(done) / len(done) if done else 0.0

    def to_markdown(self) -> str:
        if self.offline:
            return self._offline_markdown()
        means, n = self.means()
        labels = {"faithfulness": "faithfulness (claims supported by cited posts)",
                  "correctness": "correctness (vs the gold answer)",
                  "source_hit": "relevant post among the sources"}
        rows = ["| metric | mean | n |", "|---|---|---|"]
        for m in METRICS:
            value = "—" if means[m] is None else f"{means[m]:.4f}"
            rows.append(f"| {labels[m]} | {value} | {n[m]} |")
        c = self.counts()
        note = (f"\n{self.dataset}: {c['queries']} queries, {self.docs} docs, model {self.model}; "
                f"answers: {c['generative']} generative, {c['extractive']} extractive, "
                f"{c['not_found']} not found, {c['qa_failed']} failed; judge: {c['judged']} "
                f"judged, {c['judge_failed']} failed; gold answers: {c['with_gold']}")
        if self.stopped_early:
            note += f"\nstopped early: {self.stopped_early}"
        return "\n".join(rows) + note

    def _offline_markdown(self) -> str:
        means, n = self.offline_means()
        labels = {"in_answer": "gold answer in the answer",
                  "in_first_sentence": "gold answer in the first cited sentence",
                  "answer_chars": "answer length, characters",
                  "not_found": "not found (questions with an answer)",
                  "no_answer_not_found": "not found (questions without one)",
                  "source_hit": "relevant post among the sources"}
        rows = ["| metric | mean | n |", "|---|---|---|"]
        for m in OFFLINE_METRICS:
            if m == "no_answer_not_found" and not n[m]:
                continue
            value = ("—" if means[m] is None else
                     f"{means[m]:.1f}" if m == "answer_chars" else f"{means[m]:.4f}")
            rows.append(f"| {labels[m]} | {value} | {n[m]} |")
        c = self.counts()
        note = (f"\n{self.dataset}: {c['queries']} queries, {self.docs} docs, offline (no LLM: "
                f"extractive answers, gold-answer containment); answers: {c['extractive']} "
                f"extractive, {c['generative']} generative, {c['not_found']} not found, "
                f"{c['qa_failed']} failed; gold answers: {c['with_gold']}, questions without an "
                f"answer: {sum(it.no_answer for it in self.items)}; "
                f"{self.answer_seconds():.2f} s per answer")
        return "\n".join(rows) + note


def evaluate_answers(
    dataset: Path | str,
    settings: Settings,
    llm: LLM | None,
    limit: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> AnswersResult:
    """Index (or reuse) the dataset, answer every query with the QA and grade it.

    With ``llm=None`` the answers are extractive and graded offline (gold-answer containment);
    otherwise the LLM answers and judges.
    """
    ds = load_beir(dataset).limited(limit)
    gold = load_gold(ds)
    no_answer = dict(list(load_no_answer(ds).items())[:limit])
    questions = {**ds.queries, **no_answer}
    ids = list(ds.corpus)  # eval post n (message id) ↔ ids[n - 1], as eval.retrieval.to_posts
    started = time.perf_counter()
    index = index_dataset(ds, settings, (lambda d, t: on_progress("index", d, t))
                          if on_progress else None)
    result = AnswersResult(ds.name, len(ds.corpus), [],
                           model=llm.metadata.model_name if llm else "",
                           index_seconds=time.perf_counter() - started, offline=llm is None)
    guard = FailureGuard("eval answers")
    try:
        engine = QAEngine(index, llm)
        for n, (qid, question) in enumerate(questions.items(), start=1):
            item = AnswerItem(qid, question, [] if qid in no_answer else gold.get(qid, []),
                              no_answer=qid in no_answer)
            result.items.append(item)
            if llm is None:
                _answer_offline(engine, item, ids, ds.qrels.get(qid, {}))
                stop = False
            else:
                stop = _answer_one(engine, llm, item, ids, ds.qrels.get(qid, {}), guard)
            if on_progress:
                on_progress("answers", n, len(questions))
            if stop:
                result.stopped_early = (f"the LLM failed {guard.in_a_row} times in a row "
                                        f"after {n} of {len(questions)} queries")
                break
    finally:
        index.close()
    if llm is not None:
        guard.raise_if_all_failed()
    result.seconds = time.perf_counter() - started
    return result


def _ask(engine: QAEngine, item: AnswerItem, ids: list[str],
         relevant: dict[str, int]) -> Answer:
    started = time.perf_counter()
    try:
        answer = engine.ask(item.question)
    finally:
        item.seconds = time.perf_counter() - started
    item.answer, item.mode = answer.answer, answer.mode
    item.sources = [ids[s.hit.message_id - 1] for s in answer.sources]
    if relevant and not item.no_answer:
        item.source_hit = any(relevant.get(d, 0) > 0 for d in item.sources)
    return answer


def _answer_offline(engine: QAEngine, item: AnswerItem, ids: list[str],
                    relevant: dict[str, int]) -> None:
    """Fill ``item`` from the extractive answer: containment of the gold answers, no judge."""
    answer = _ask(engine, item, ids, relevant)
    if item.gold:
        found = answer.mode != "not_found"
        item.in_answer = found and contains_gold(answer.answer, item.gold)
        item.in_first_sentence = found and contains_gold(first_cited_sentence(answer.answer),
                                                         item.gold)


def _answer_one(engine: QAEngine, llm: LLM, item: AnswerItem, ids: list[str],
                relevant: dict[str, int], guard: FailureGuard) -> bool:
    """Fill ``item``; True when the guard says the LLM is gone and the run should stop."""
    try:
        answer = _ask(engine, item, ids, relevant)
    except LLMError as err:
        item.error = f"qa: {err.message}"
        return guard.failed(err)
    if answer.mode == "not_found":
        item.correctness = 0.0 if item.gold else None
        guard.ok()
        return False
    try:
        verdict = judge(llm, item.question, answer, item.gold)
    except LLMError as err:
        item.error = f"judge: {err.message}"
        return guard.failed(err)
    except ValueError as exc:  # the LLM works, its verdict was unreadable
        item.error = f"judge: {exc}"
        guard.ok()
        return False
    guard.ok()
    item.faithfulness, item.correctness = verdict.faithfulness, verdict.correctness
    item.unsupported, item.reason = verdict.unsupported, verdict.reason
    return False
