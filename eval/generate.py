"""Synthetic question → post pairs from the user's own indexed channels, in BEIR format.

``tgrag eval generate`` samples posts of the chosen channels from the docstore (the committed posts:
their full text, not chunks), asks the configured LLM for one question a reader would type to find
each post, checks every question and writes a folder that ``tgrag eval retrieval`` reads as is:

* ``corpus.jsonl`` — every post of the chosen channels (the search space the questions are asked
  in; ``max_corpus`` caps it to the question posts plus a seeded sample of the others):
  ``{"_id": <post id>, "title": "", "text", "metadata": {channel, link, date, …}}``.  The title is
  empty because posts have none, and ``eval retrieval`` would index a title as the first line.
* ``queries.jsonl`` — ``{"_id": "q<n>", "text", "metadata": {"post_id", "answer"?}}``; ``answer``
  is the LLM's short gold answer, which ``eval answers`` grades correctness against.
* ``qrels.tsv`` — ``query-id  corpus-id  score``: each question's one relevant post.
* ``generation.json`` — the report below, the seed, the model and the prompt version.

The prompt (Russian, :data:`USER_PROMPT`) asks for a natural search question answerable from the
post, understandable without it, not copying its wording, plus a short answer, as JSON.  A reply is
rejected when it is unreadable, not one line, lacks the final ``?``, is too short or long, refers
to "this post", repeats :data:`COPY_WORDS` or more consecutive words of the post, or duplicates an
earlier question; the model is then told why and asked again, at most ``tries`` calls per post.
A refusal, an LLM error or ``tries`` rejections skip the post (counted in the report); the run
fails only when no question at all could be made.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from eval.beir import FILES
from eval.llm_util import LLM_HINT, FailureGuard, chat_text, extract_json
from rag.errors import InputError, LLMError
from rag.ids import parse_doc_id
from rag.index import Index

PROMPT_VERSION = 1
MIN_POST_CHARS = 100  # shorter posts rarely hold a fact worth a question
COPY_WORDS = 6  # this many consecutive words of the post in the question = copied
MAX_TRIES = 3
POST_PROMPT_CHARS = 2000  # of the post shown to the LLM; the question is about what it saw
QUESTION_CHARS = (10, 300)
ANSWER_CHARS = 300
MAX_ERRORS_KEPT = 5

SYSTEM_PROMPT = ("Ты составляешь проверочный набор вопросов для поиска по постам "
                 "Telegram-каналов. Отвечай строго в заданном формате.")
USER_PROMPT = """Пост из Telegram-канала «{channel}»:

<<<
{text}
>>>

Придумай один естественный вопрос, который читатель мог бы набрать в поиске, чтобы найти этот пост.
- На вопрос можно ответить по этому посту.
- Вопрос понятен без поста: не пиши «в этом посте», «в тексте», «автор»; прямо называй, о ком или \
о чём речь.
- Не копируй формулировки поста: спроси своими словами, не повторяй подряд больше трёх слов из него.
- Одна строка на языке поста, в конце вопросительный знак.
Ещё дай короткий ответ на этот вопрос по посту (до 15 слов).
Ответь только JSON без пояснений: {{"question": "…", "answer": "…"}}"""
RETRY_PROMPT = ("Этот вариант не подходит: {reason}. Придумай другой вопрос с теми же "
                "требованиями и ответь только JSON.")

# Rejection reason → what the model is told on the retry.
REASONS = {
    "unreadable": "нужен JSON с полем \"question\"",
    "empty": "вопрос пустой",
    "multiline": "вопрос должен быть одной строкой",
    "no_question_mark": "вопрос должен заканчиваться знаком «?»",
    "length": "вопрос слишком короткий или слишком длинный",
    "refers_to_post": "вопрос ссылается на пост или текст, а должен быть понятен без него",
    "copies_post": "вопрос повторяет формулировки поста; спроси своими словами",
    "duplicate": "такой вопрос уже есть; спроси о другой подробности поста",
}
WORD = re.compile(r"\w+")
QUOTES = "\"'«»“”„`"
PREFIX = re.compile(r"^(?:вопрос|question)\s*[:.\-—]\s*", re.I)
ANSWER_LINE = re.compile(r"^(?:ответ|answer)\s*[:.\-—]\s*", re.I)
# "в этом посте", "из текста", "автор поста": the reader searching has no post in front of them.
REFERS = re.compile(
    r"\b(?:эт(?:от|ом|ого|ой|у|а|о)|данн(?:ый|ом|ого|ой|ую|ая))\s+"
    r"(?:пост[еау]?|текст(?:е|а|у|ом)?|стать(?:я|е|и|ю|ей)|сообщени\w*|публикаци\w*|заметк\w*)\b"
    # "в тексте?" yes, "в тексте закона" no: only when nothing names what text.
    r"|\b(?:в|из)\s+(?:посте|поста|тексте|текста)\b(?!\s+\w)"
    r"|\bавтор\w*\s+(?:поста|текста|статьи|сообщения)\b",
    re.I,
)


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class SourcePost:
    id: str
    text: str
    metadata: dict[str, Any]

    @property
    def channel_name(self) -> str:
        m = self.metadata
        return str(m.get("channel_title") or m.get("channel") or m.get("channel_id") or "")

    def corpus_record(self) -> dict[str, Any]:
        m = self.metadata
        meta = {k: m.get(k) for k in ("channel_id", "channel", "channel_title", "message_id",
                                      "link")}
        meta["date"] = m.get("date_iso")
        return {"_id": self.id, "title": "", "text": self.text, "metadata": meta}


@dataclass
class GenerateReport:
    out: str
    requested: int
    seed: int
    channels: list[int] = field(default_factory=list)  # empty = every channel
    posts: int = 0  # posts in the chosen channels
    questions: int = 0
    corpus: int = 0
    tried: int = 0  # posts sent to the LLM
    too_short: int = 0
    rejected: int = 0  # posts whose every try was rejected
    refused: int = 0
    failed: int = 0  # posts whose LLM call failed
    llm_calls: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # every rejected reply, by reason
    errors: list[str] = field(default_factory=list)  # the first few LLM errors
    stopped_early: str | None = None
    model: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        lines = [
            f"{self.questions} questions over {self.corpus} posts written to {self.out} "
            f"({self.seconds:.1f}s, {self.llm_calls} LLM calls)",
            f"posts: {self.tried} tried, {self.too_short} too short, {self.rejected} rejected, "
            f"{self.refused} refused, {self.failed} failed",
            f"rejected replies: {reasons}",
        ]
        lines += [f"  LLM error: {e}" for e in self.errors]
        if self.stopped_early:
            lines.append(f"stopped early: {self.stopped_early}")
        if self.questions < self.requested:
            lines.append(f"fewer than the {self.requested} asked for: the chosen channels ran out "
                         "of usable posts" if not self.stopped_early else
                         f"fewer than the {self.requested} asked for")
        return "\n".join(lines)


# -- checking one reply ---------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w.lower().replace("ё", "е") for w in WORD.findall(text)]


def longest_shared_run(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest run of consecutive words found in both sequences."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def _strip(text: str) -> str:
    text = PREFIX.sub("", text.strip())
    while len(text) > 1 and text[0] in QUOTES and text[-1] in QUOTES:
        text = text[1:-1].strip()
    return re.sub(r"[ \t]+", " ", text.strip())


def parse_reply(text: str) -> tuple[str, str | None]:
    """The question and the optional answer from a reply: JSON, else ``Вопрос:``/``Ответ:``
    lines, else the whole reply as the question."""
    try:
        obj = extract_json(text)
    except ValueError:
        obj = None
    if obj is not None:
        question, answer = obj.get("question"), obj.get("answer")
        if not isinstance(question, str):
            raise Rejected("unreadable")
    else:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        answers = [ln for ln in lines if ANSWER_LINE.match(ln)]
        asked = [ln for ln in lines if PREFIX.match(ln)]
        answer = ANSWER_LINE.sub("", answers[0]) if answers else None
        question = asked[0] if asked else "\n".join(ln for ln in lines if ln not in answers)
    clean = " ".join(answer.split())[:ANSWER_CHARS] if isinstance(answer, str) else ""
    return _strip(question), (clean or None)


def check_question(question: str, post_text: str, seen: set[str]) -> str:
    """The question if it passes every check (see the module docstring), else :class:`Rejected`."""
    if not question:
        raise Rejected("empty")
    if "\n" in question:
        raise Rejected("multiline")
    if not question.endswith("?"):
        raise Rejected("no_question_mark")
    if not QUESTION_CHARS[0] <= len(question) <= QUESTION_CHARS[1]:
        raise Rejected("length")
    if REFERS.search(question):
        raise Rejected("refers_to_post")
    if longest_shared_run(words(question), words(post_text)) >= COPY_WORDS:
        raise Rejected("copies_post")
    if " ".join(words(question)) in seen:
        raise Rejected("duplicate")
    return question


def ask_for_question(llm: LLM, post: SourcePost, report: GenerateReport, seen: set[str],
                     tries: int = MAX_TRIES) -> tuple[str, str | None] | None:
    """One checked (question, answer) for ``post``, or ``None`` (refused or every try rejected).
    LLM errors propagate as :class:`LLMError`."""
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT),
        ChatMessage(role=MessageRole.USER, content=USER_PROMPT.format(
            channel=post.channel_name, text=post.text[:POST_PROMPT_CHARS])),
    ]
    for _ in range(max(1, tries)):
        reply, refused = chat_text(llm, messages)
        report.llm_calls += 1
        if refused:
            report.refused += 1
            return None
        try:
            question, answer = parse_reply(reply)
            return check_question(question, post.text, seen), answer
        except Rejected as rej:
            report.reasons[rej.reason] = report.reasons.get(rej.reason, 0) + 1
            messages += [ChatMessage(role=MessageRole.ASSISTANT, content=reply),
                         ChatMessage(role=MessageRole.USER,
                                     content=RETRY_PROMPT.format(reason=REASONS[rej.reason]))]
    report.rejected += 1
    return None


# -- posts ----------------------------------------------------------------------------------------


def channel_post_ids(index: Index, channel_ids: Sequence[int]) -> list[str]:
    """Committed post ids of the index's tenant in these channels (all when empty), in
    (channel, message) order so a seed always means the same sample."""
    wanted = set(channel_ids)
    keyed: list[tuple[int, int, str]] = []
    for doc_id in index.docstore.get_all_document_hashes().values():
        doc_id = str(doc_id)
        try:
            tenant, cid, mid = parse_doc_id(doc_id)
        except InputError:  # not a post's id
            continue
        if tenant == index.tenant and (not wanted or cid in wanted):
            keyed.append((cid, mid, doc_id))
    return [doc_id for *_, doc_id in sorted(keyed)]


def load_post(index: Index, doc_id: str) -> SourcePost | None:
    doc = index.docstore.get_document(doc_id, raise_error=False)
    if doc is None:
        return None
    return SourcePost(doc_id, doc.text, dict(doc.metadata))  # type: ignore[attr-defined]


# -- the whole run --------------------------------------------------------------------------------


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder", hint="pick another --out")
    existing = [f for f in (*FILES, "generation.json") if (out / f).exists()]
    if existing and not force:
        raise InputError(f"{out} already holds a dataset ({', '.join(existing)})",
                         hint="pick another --out, or pass --force to overwrite it")


def generate_dataset(
    index: Index,
    llm: LLM | None,
    out: Path | str,
    *,
    channels: Sequence[str | int] = (),
    n: int = 100,
    seed: int = 0,
    min_chars: int = MIN_POST_CHARS,
    max_corpus: int | None = None,
    tries: int = MAX_TRIES,
    force: bool = False,
    on_progress: Callable[[GenerateReport], None] | None = None,
) -> GenerateReport:
    """Sample posts, make one checked question per post until ``n``, write the BEIR folder."""
    if llm is None:
        raise InputError("eval generate needs an LLM, and TGRAG_LLM is 'none'", hint=LLM_HINT)
    if n < 1:
        raise InputError(f"-n must be ≥ 1, got {n}")
    out = Path(out)
    check_out_dir(out, force)
    channel_ids = list(dict.fromkeys(index.catalog.resolve(c) for c in channels))
    ids = channel_post_ids(index, channel_ids)
    if not ids:
        raise InputError("no indexed posts in " + (f"channel(s) {', '.join(map(str, channels))}"
                                                   if channels else "the index"),
                         hint="`tgrag stats` lists the indexed channels; ingest some first")
    report = GenerateReport(out=str(out), requested=n, seed=seed, channels=channel_ids,
                            posts=len(ids), model=llm.metadata.model_name)
    started = time.perf_counter()
    order = list(ids)
    random.Random(seed).shuffle(order)
    guard = FailureGuard("eval generate")
    pairs: list[tuple[SourcePost, str, str | None]] = []  # (post, question, answer)
    seen: set[str] = set()
    for doc_id in order:
        if len(pairs) >= n:
            break
        post = load_post(index, doc_id)
        if post is None or len(post.text.strip()) < min_chars:
            report.too_short += 1
            continue
        report.tried += 1
        try:
            made = ask_for_question(llm, post, report, seen, tries)
        except LLMError as err:
            report.failed += 1
            if len(report.errors) < MAX_ERRORS_KEPT:
                report.errors.append(err.message)
            if guard.failed(err):
                report.stopped_early = f"the LLM failed {guard.in_a_row} times in a row"
                break
        else:
            guard.ok()
            if made:
                question, answer = made
                seen.add(" ".join(words(question)))
                pairs.append((post, question, answer))
                report.questions = len(pairs)
        if on_progress:
            on_progress(report)
    if not pairs:
        guard.raise_if_all_failed()
        if report.tried:
            raise LLMError(f"eval generate: no usable question from {report.tried} posts "
                           f"(rejected: {report.reasons}, refused: {report.refused})",
                           hint="try another model (TGRAG_GIGACHAT_MODEL / TGRAG_OPENAI_MODEL)")
        raise InputError(f"no post of at least {min_chars} characters among {len(ids)}",
                         hint="lower --min-chars or choose other channels")
    corpus_ids = _corpus_ids(ids, [p[0].id for p in pairs], max_corpus, seed)
    _write(index, out, corpus_ids, pairs, report, started)
    return report


def _corpus_ids(ids: list[str], question_ids: list[str], max_corpus: int | None,
                seed: int) -> list[str]:
    if max_corpus is None or max_corpus >= len(ids):
        return ids
    chosen = set(question_ids)
    others = [i for i in ids if i not in chosen]
    random.Random(seed + 1).shuffle(others)
    chosen.update(others[:max(0, max_corpus - len(chosen))])
    return [i for i in ids if i in chosen]  # keep the (channel, message) order


def _write(index: Index, out: Path, corpus_ids: list[str],
           pairs: list[tuple[SourcePost, str, str | None]], report: GenerateReport,
           started: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    asked = {post.id: post for post, _, _ in pairs}  # as the LLM saw them
    corpus = []
    for doc_id in corpus_ids:
        post = asked.get(doc_id) or load_post(index, doc_id)
        if post is not None:  # None: deleted by a sync since the listing
            corpus.append(json.dumps(post.corpus_record(), ensure_ascii=False))
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for n, (post, question, answer) in enumerate(pairs, start=1):
        meta: dict[str, Any] = {"post_id": post.id}
        if answer:
            meta["answer"] = answer
        queries.append(json.dumps({"_id": f"q{n}", "text": question, "metadata": meta},
                                  ensure_ascii=False))
        qrels.append(f"q{n}\t{post.id}\t1")
    report.corpus = len(corpus)
    report.seconds = time.perf_counter() - started
    generation = {**report.to_dict(), "prompt_version": PROMPT_VERSION,
                  "created": datetime.now(UTC).isoformat(timespec="seconds")}
    files = {
        "corpus.jsonl": "\n".join(corpus) + "\n",
        "queries.jsonl": "\n".join(queries) + "\n",
        "qrels.tsv": "\n".join(qrels) + "\n",
        "generation.json": json.dumps(generation, ensure_ascii=False, indent=2) + "\n",
    }
    # Each file is replaced whole, so a crash never leaves a half-written one behind.
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
