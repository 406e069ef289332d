"""Sentence selection: the few sentences of a few posts that answer a question, or sum them up.

One component for every text we build without an LLM: ``tgrag ask``'s extractive answers
(:meth:`SentenceSelector.answer`) and the offline summary of a story of posts
(:meth:`SentenceSelector.summarise`, for digests).  It returns sentences with the number of the
post they come from; :func:`cite` renders them as ``sentence [n]``.

How a sentence is chosen for a question:

* **Candidates.** The posts are split into sentences (line breaks always end one; ``.!?…``
  followed by a capital, not after an initial or an abbreviation such as "г." or "млн.").
  Fragments without content are dropped: headers ending in ":", questions, lone links, hashtag
  and mention lines, calls to subscribe or "следим за новостями", anything with < 3 words.
* **Lexical score.** The question's terms are the stems the search's BM25 half uses
  (:class:`rag.sparse.Analyzer`: pymorphy3 lemma, then Snowball, so "ставку" meets "ставки"),
  without question words.  A sentence scores the share of the question's term weight it holds;
  a term weighs ``ln(1 + N/df)`` over the candidate sentences, so a word every sentence repeats
  tells less than the word only the answer has; the question's names (:func:`question_specifics`)
  weigh half (``name_weight``): they locate the subject, which the sources share, the other
  words the fact.
* **Context.** News and encyclopedias state the subject first and the fact after it, so a
  sentence inherits part of the match of the two before it in its post, and one that adds
  question words of its own is read together with them (subject and fact split over two
  sentences); for a factoid question a sentence that only restates the question (almost all its
  terms are the question's, and it holds nothing of what the question asks for) is left out.
* **Dense score.** The cosine between the question (e5 ``query:``) and the sentence (``passage:``)
  embeddings, for the best lexical candidates only (``dense_candidates``, 5): embedding them
  costs ~1 s per answer on two busy cores, and measured as good as 3 or 10 (docs/eval.md, 7.3).
  It finds the answer that says it in other words, and orders the ties.
* **What the question asks for.** "сколько / how many" and a measure after "какой" ("какую
  долю", "с какого возраста") want a number, "когда / when" a date, "кто / who", "где / where",
  "как называется" and "какой …" a name (a capitalised or Latin word, a model such as "Ан-3", a
  title in quotes); "кто / какой депутат" a person's and "где / в каком городе / какие сёла" a
  place's, so a Russian name the dictionary (pymorphy3) knows as another kind ("в Госдуме" for
  "кто") does not count. A sentence holding one the question does not already contain (by stem)
  gets a bonus, and is never taken for a mere restatement of the question.
* **Choice.** The best sentence, then at most ``max_sentences - 1`` more that score close to it,
  fit the length budget and do not repeat a chosen one (stem overlap or cosine; copies of one
  report in several channels are common).  A best sentence longer than the budget is cut to the
  stretch with the question's words and what it asks for, which may fill only 2/3 of it: the
  fact usually follows the words that name its subject.
* **Stories.** "что случилось / что нового / latest" questions take one sentence per post, in
  date order with the date shown, so a story reads in time order; "сейчас / текущая / now"
  puts the newest first.

Summaries (no question) rank sentences by centrality: the share of the other posts that share
their terms, the cosine to the centroid of the candidates' embeddings, and a bonus for a post's
lead sentence (news says the news first).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from rag.snippets import snippet_with_highlights
from rag.sparse import STOPWORDS, Analyzer, morphology, shared_analyzer

Vector = Sequence[float]
EmbedQuery = Callable[[str], Vector]
EmbedPassages = Callable[[list[str]], Sequence[Vector]]

# -- sentences ------------------------------------------------------------------------------------

# A sentence ends at .!?… (and closing quotes/brackets) before a space and a capital, a digit, a
# quote or a dash; "в 2024 г. в Москве" and "т. е. так" go on.  Line breaks always end one.
_END = re.compile(r"(?<=[.!?…])[»\"')\]]*\s+(?=[«\"(\[—–-]?\s*[A-ZА-ЯЁ0-9])")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_ABBREVIATIONS = _word_set(
    "г гг т тыс млн млрд трлн руб коп ул пр им д обл р св ст проф акад ген др mr mrs ms dr st "
    "jr sr vs no inc ltd co corp u.s u.k e.g i.e etc c ca approx fig"
)
_INITIAL = re.compile(r"(?:^|[\s(«\"])([A-Za-zА-Яа-яЁё]{1,5}|[A-Za-z](?:\.[A-Za-z])+)\.$")
_LEAD = re.compile(r"^[^\w#@«\"(\[]+")  # emoji, bullets, dashes in front of a line
_URL = re.compile(r"(?:https?://|www\.|t\.me/)\S+", re.IGNORECASE)
_TAG = re.compile(r"(?<!\w)[#@][\w.]+")
_WORDS = re.compile(r"[^\W\d_]{2,}")
# Lines that carry no news: calls to subscribe, to send news, to follow, ads, "more at the link".
_BOILERPLATE = re.compile(
    r"подпи(шись|шитесь|сывайся|сывайтесь|саться)\b|подписк[аи] на (наш|канал)|"
    r"прислать новость|предложить новость|"
    r"прислать (фото|видео)|следим за (новостями|развитием|ситуацией)|следите за|"
    r"читать (нас|полностью|далее|подробнее)|подробнее (по ссылке|тут|здесь|в )|"
    r"наш канал|реклама\b|\berid\b|ставьте лайк|переходи(те)? по ссылке|"
    r"subscribe|follow us|read more", re.IGNORECASE)
MIN_WORDS = 3


@dataclass(frozen=True, slots=True)
class Passage:
    """One post given to the selector: its citation number, text and date (unix s; 0 unknown)."""

    n: int
    text: str
    date: int = 0


@dataclass(slots=True)
class Pick:
    """A chosen sentence, the post it comes from (``n``) and why it was chosen."""

    n: int
    text: str
    date: int = 0
    position: int = 0  # index of the sentence in its post's candidates
    score: float = 0.0
    lexical: float = 0.0
    dense: float | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """What a question asks for: an answer type, and whether it asks for a story / the latest."""

    wants: str | None = None  # "number" | "date" | "name" | None
    name_kind: str | None = None  # for "name": "person" | "place" when the question says so
    story: bool = False
    newest_first: bool = False


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (whitespace collapsed, leading emoji and bullets removed)."""
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        pieces = _END.split(line)
        merged: list[str] = []
        for piece in pieces:
            if merged and _ends_with_abbreviation(merged[-1]):
                merged[-1] += " " + piece
            else:
                merged.append(piece)
        out.extend(s for s in (_LEAD.sub("", m).strip() for m in merged) if s)
    return out


def _ends_with_abbreviation(text: str) -> bool:
    match = _INITIAL.search(text)
    if not match:
        return False
    token = match.group(1)
    # A capital initial ("В. Путин", "J. Smith") or a known abbreviation ("г.", "млн.", "U.S.").
    return (len(token) == 1 and token.isupper()) or token.lower() in _ABBREVIATIONS


def is_content_free(sentence: str) -> bool:
    """Headers, questions, links, hashtag lines, calls to subscribe, fragments of < 3 words."""
    text = sentence.strip()
    if text.endswith((":", "?")):
        return True
    bare = _TAG.sub(" ", _URL.sub(" ", text))
    if len(_WORDS.findall(bare)) < MIN_WORDS:
        return True
    return bool(_BOILERPLATE.search(text)) and len(_WORDS.findall(bare)) <= 14


# -- questions ------------------------------------------------------------------------------------

_WANTS = (
    ("number", re.compile(
        r"\bсколько\b|\bскольки[хм]?\b|на сколько|во сколько раз|"
        # "какую долю / какую площадь / ниже какой температуры / с какого возраста": a measure.
        r"как(ой|ая|ую|ое|ов|ова|овы|ого|ом|ие|их) (процент|сумм|размер|цен|стоимост|количеств|"
        r"дол[яеюи]|ставк|курс|тираж|зарплат|площад|разрешени|температур|возраст|расстояни|"
        r"скорост|высот|глубин|длин|вес|масс|мощност|объ[её]м|тариф|штраф|пошлин|налог)|"
        r"\bhow (many|much|long|old|far|large|big|tall|often)\b|"
        r"\bwhat (percentage|percent|proportion|number|amount|fraction)\b|"
        r"\bwhat (is|was|are|were) the (population|size|area|cost|price|height|length|distance|"
        r"weight|speed|age|rate|temperature)\b", re.IGNORECASE)),
    ("date", re.compile(
        r"\bкогда\b|в как(ом|ой|ие) (году|месяце|день|дату|числа|годы)|как(ого|ой) числа|"
        r"\bс какого\b|\bдо какого\b|\bwhen\b|\b(what|which|in what) (year|date|day|month|"
        r"decade|century)\b", re.IGNORECASE)),
    ("name", re.compile(
        r"\bкто\b|\bкого\b|\bкому\b|\bкем\b|\bчей\b|\bчья\b|\bчь[её]\b|\bчьи\b|\bгде\b|\bкуда\b|"
        r"\bоткуда\b|\bкак (зовут|называ\w+)\b|\bwho(m|se)?\b|\bwhere\b|"
        r"\bwhich (city|country|company|team|person|state)\b", re.IGNORECASE)),
)
# "какой самолёт / какая компания / какую партию": most often a name, a model or a title.
_WHICH = re.compile(r"^\W*(\w+ )?как(ой|ая|ое|ие|ую|ого|ом|им|ими|их)\b", re.IGNORECASE)
_STORY = re.compile(
    r"что (случилось|произошло|происходит|известно|нового|слышно|там|с\b|со\b)|"
    r"как(ие)? (последн|новост)|последн(ие|яя|ее|ий|юю|их)|новост|хронолог|как (изменил|менял|"
    r"развивал)|что было|\bwhat happened\b|\blatest\b|\bnews (about|on)\b|\bwhat'?s new\b",
    re.IGNORECASE)
_NOW = re.compile(r"\bсейчас\b|текущ|актуальн|на данный момент|на сегодня|\bтеперь\b|"
                  r"\bnow\b|\bcurrent(ly)?\b|\btoday\b", re.IGNORECASE)
# Words that say what is asked, not what about: never terms to match.
QUESTION_WORDS = _word_set(
    "кто кого кому кем что чего чему чем когда где куда откуда сколько скольких почему зачем "
    "какой какая какое какие каком какую каких каким как ли ль чей чья чье чьи случиться "
    "произойти происходить известно нового новое новость новости последний сейчас текущий "
    "who whom whose what which when where why how many much did does do was were is are has have "
    "had been the a an of in on at to for from by with about latest current currently now happen "
    "happened new news"
)


# Asking for a name outright wins over a "когда" in a clause ("как называется событие, когда …").
_NAMED = re.compile(r"\bкак (зовут|называ\w+)\b|\bwhat (is|was|were|are) the names?\b",
                    re.IGNORECASE)

# Which kind of name: "кто / какой депутат" a person, "где / в каком городе / какие сёла" a place.
_NAME_KINDS = (
    ("person", re.compile(
        r"\bкто\b|\bкого\b|\bкому\b|\bкем\b|\bчь(я|е|ё|и|ей|их)\b|\bчей\b|\bкак зовут\b|"
        r"\bкак\w* (\w+ )?(депутат|глав|министр|президент|премьер|губернатор|мэр|актер|актёр|"
        r"актрис|певиц|певец|певц|режисс[её]р|писател|автор|тренер|игрок|футболист|хоккеист|"
        r"спортсмен|учен|бизнесмен|миллиардер|основател|создател|директор|руководител|"
        r"политик|блогер|артист|человек|чиновник|судь)", re.IGNORECASE)),
    ("place", re.compile(
        r"\bгде\b|\bкуда\b|\bоткуда\b|\bкак\w* (\w+ )?(город|стран|регион|област|район|"
        r"сел[оеу]\b|сёла|сёл\b|деревн|посел|улиц|аэропорт|аэродром|"
        r"вокзал|остров|мор[ея]|рек[иау]|континент)", re.IGNORECASE)),
)


def question_intent(question: str) -> Intent:
    """The answer type a question asks for and whether it asks for a story or the latest state."""
    wants = "name" if _NAMED.search(question) else next(
        (kind for kind, pattern in _WANTS if pattern.search(question)), None)
    now = bool(_NOW.search(question))
    # "какая сейчас ставка?" asks for the latest state, a story read newest first.
    story = bool(_STORY.search(question)) or (now and wants is None)
    if wants is None and _WHICH.search(question):
        wants = "name"
    name_kind = None
    if wants == "name":
        name_kind = next((kind for kind, pattern in _NAME_KINDS if pattern.search(question)),
                         None)
    return Intent(wants=wants, story=story, newest_first=now, name_kind=name_kind)


_FIGURE = re.compile(r"\d+")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#]*")
# A capitalised Cyrillic word that does not open the question (that one is "Кто", "Какой" …),
# or an abbreviation in capitals anywhere (ЦБ, США, МФЦ).
_QUESTION_NAME = re.compile(r"(?<=[\s«\"(„“-])[А-ЯЁ][а-яё]+|(?<![\w])[А-ЯЁ]{2,}(?![\w])")
# In a question written in Latin script every word is Latin: there, as in Russian, the names are
# the capitalised words after the first and the abbreviations in capitals (Lady Gaga, NFL).
_LATIN_NAME = re.compile(r"(?<=[\s\"(“-])[A-Z][A-Za-z0-9+#]*|(?<![\w])[A-Z]{2,}(?![\w])")


def question_specifics(question: str, text_analyzer: Analyzer) -> list[tuple[str, str]]:
    """``(kind, form)`` per specific of a question: its figures (``number``: "2018"), Latin words
    (``latin``, lowercased: "brent") and capitalised names (``name``, stemmed: "эверест").

    In a question written in Latin script (English) only the capitalised words after the first
    and the abbreviations are names: every word there is Latin.  The relevance floor wants them
    in a source; the selector weighs the names less than the other words (they locate the
    subject, which every source shares, not the fact).
    """
    out: dict[tuple[str, str], None] = {}
    for m in _FIGURE.finditer(question):
        out[("number", m.group(0))] = None
    latin = _LATIN_WORD.findall(question)
    if sum(map(len, latin)) > 2 * len(_CYRILLIC_WORD.findall(question)):
        latin = _LATIN_NAME.findall(question)  # an English question: its names only
    for word in latin:
        out[("latin", word.lower())] = None
    for m in _QUESTION_NAME.finditer(question):
        stem = text_analyzer.stem(m.group(0))
        if stem:
            out[("name", stem)] = None
    return list(out)


# -- answer types in sentences --------------------------------------------------------------------

_NUMBER_WORDS = (
    r"один|одн\w+|два|две|двух|три|трех|трёх|четыр\w+|пят\w+|шест\w+|сем\w+|восем\w+|девят\w+|"
    r"десят\w+|\w+дцат\w+|сорок\w*|сто|сотн\w+|тысяч\w*|миллион\w*|миллиард\w*|млн|млрд|трлн|тыс|"
    r"полтор\w+|половин\w+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\w+teen|"
    r"twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundreds?|thousands?|millions?|"
    r"billions?|dozens?|half"
)
_NUMBER = re.compile(rf"\d|\b(?:{_NUMBER_WORDS})\b", re.IGNORECASE)
_MONTHS = (
    r"январ\w*|феврал\w*|март\w*|апрел\w*|ма[йяе]|июн\w*|июл\w*|август\w*|сентябр\w*|октябр\w*|"
    r"ноябр\w*|декабр\w*|january|february|march|april|may|june|july|august|september|october|"
    r"november|december"
)
_DATE = re.compile(
    rf"\b(1[5-9]\d\d|20\d\d)(?:s|-?[ех])?\b|\b\d{{1,2}}[./]\d{{1,2}}(?:[./]\d{{2,4}})?\b|\b(?:{_MONTHS})\b|"
    r"\b(вчера|сегодня|завтра|понедельник|вторник|сред[ау]|четверг|пятниц[ау]|суббот[ау]|"
    r"воскресенье|century|decade|веке?|годах)\b", re.IGNORECASE)
_CYRILLIC_WORD = re.compile(r"[А-ЯЁа-яё]")
_CAPITALISED = re.compile(r"(?<![\w.])[A-ZА-ЯЁ][\w-]+")
_MODEL = re.compile(r"\b[A-Za-z][\w-]+|\b[A-Za-zА-Яа-яЁё]+-\d[\w-]*")
_MODEL_CODE = re.compile(r"\b[A-Za-zА-Яа-яЁё]+-\d[\w-]*")  # Ан-3, DBA-1, Ми-28
_OPENING_NAME = re.compile(r"^[«\"(]?([A-ZА-ЯЁ][\w-]+)(?= [A-ZА-ЯЁ][\w-]+)")
_CYRILLIC_LETTERS = re.compile(r"[а-яёА-ЯЁ]")
_QUOTED = re.compile(r"[«\"]([^»\"]{2,60})[»\"]")


def answer_tokens(sentence: str, kind: str) -> set[str]:
    """The tokens of ``sentence`` that could be an answer of ``kind`` (lowercased)."""
    if kind == "number":
        return {m.group(0).lower() for m in re.finditer(rf"\d[\d.,]*|\b(?:{_NUMBER_WORDS})\b",
                                                        sentence, re.IGNORECASE)}
    if kind == "date":
        return {m.group(0).lower() for m in _DATE.finditer(sentence)}
    if kind in ("person", "place"):
        # A Russian proper noun the dictionary knows as another kind ("в Госдуме" for "кто")
        # is not what the question asks for; an unknown or Latin one may be.
        return {m.group(0).lower() for m in _CAPITALISED.finditer(sentence)
                if m.start() > 0 and _proper_kind(m.group(0)) in (kind, None)}
    if kind == "name":
        # A capitalised word not opening the sentence: in Russian and English a proper noun;
        # opening it, when the next word is capitalised too ("Peyton Manning became …").
        found = {m.group(0).lower() for m in _CAPITALISED.finditer(sentence) if m.start() > 0}
        found |= {m.group(1).lower() for m in _OPENING_NAME.finditer(sentence)
                  if m.group(1).lower() not in STOPWORDS and _proper_kind(m.group(1)) != "other"}
        # ... models (Ан-3, DBA-1), titles in quotes («Нечто») and, in a Russian sentence,
        # Latin words (Swiftair); in an English one every word is Latin.
        models = _MODEL.findall(sentence)
        if sum(map(len, models)) > 2 * len(_CYRILLIC_LETTERS.findall(sentence)):
            models = _MODEL_CODE.findall(sentence)
        found |= {m.lower() for m in models}
        return found | {m.group(1).lower() for m in _QUOTED.finditer(sentence)}
    return set()


_KIND_TAGS = (("person", ("Name", "Surn", "Patr")), ("place", ("Geox",)))


def _proper_kind(word: str) -> str | None:
    """"person" / "place" / "other" for a Russian word the dictionary knows; None otherwise."""
    if not _CYRILLIC_WORD.match(word):
        return None
    if word.isupper():
        return "other"  # an abbreviation: an organisation far more often than a person (ЦБ, МЧС)
    parse = morphology().parse(word)[0]
    if not parse.is_known:
        return None
    return next((kind for kind, tags in _KIND_TAGS if any(t in parse.tag for t in tags)),
                "other")


# -- the selector ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    """Weights and limits of :class:`SentenceSelector` (defaults tuned in docs/eval.md)."""

    lexical_weight: float = 1.0
    dense_weight: float = 4.0  # per unit of cosine below the best candidate's (≈ 0.05-0.1 spread)
    type_bonus: float = 0.5  # the sentence holds what the question asks for
    context_weight: float = 0.7  # share of the previous sentence's match a sentence inherits
    name_weight: float = 0.5  # a question's name (Tesla, Сочи) against its other words
    min_novelty: float = 0.25  # share of its terms a factoid answer must add to the question
    lead_bonus: float = 0.05  # the post's first sentence
    rank_penalty: float = 0.02  # per place of the post in the ranking
    dense_candidates: int = 5  # best lexical candidates scored densely; 0 = lexical only
    max_sentences: int = 2
    story_sentences: int = 3
    max_chars: int = 300  # the answer's sentences together (a longer best one is trimmed)
    story_chars: int = 500
    keep_ratio: float = 0.8  # a further sentence must score ≥ this share of the best
    story_keep_ratio: float = 0.5
    duplicate_overlap: float = 0.6  # stem containment at which two sentences say the same
    duplicate_cosine: float = 0.95
    sentences_per_post: int = 40  # candidates per post, from its start


@dataclass(slots=True)
class _Candidate:
    n: int
    text: str
    date: int
    position: int
    stems: frozenset[str]
    lexical: float = 0.0
    dense: float | None = None
    vector: Vector | None = None
    score: float = 0.0
    bonus: float = 0.0


@dataclass(slots=True)
class Selection:
    """What :meth:`SentenceSelector.answer` chose, in reading order, and the question's intent."""

    picks: list[Pick]
    intent: Intent = field(default_factory=Intent)

    @property
    def dated(self) -> bool:
        """Whether the picks read as a story in time order (and show their dates)."""
        return self.intent.story and any(p.date for p in self.picks)


class SentenceSelector:
    """Chooses sentences of numbered passages: for a question (:meth:`answer`) or a summary.

    ``embed_query`` / ``embed_passages`` are the embedding model's query and passage functions
    (``BaseEmbedding.get_query_embedding`` / ``get_text_embedding_batch``); without them the
    choice is lexical only.
    """

    def __init__(self, embed_query: EmbedQuery | None = None,
                 embed_passages: EmbedPassages | None = None, *,
                 config: SelectorConfig | None = None,
                 text_analyzer: Analyzer | None = None) -> None:
        self.embed_query = embed_query
        self.embed_passages = embed_passages
        self.config = config or SelectorConfig()
        self.analyzer = text_analyzer or shared_analyzer()

    @property
    def dense(self) -> bool:
        return (self.embed_query is not None and self.embed_passages is not None
                and self.config.dense_candidates > 0)

    # -- for a question ---------------------------------------------------------------------------

    def answer(self, question: str, passages: Sequence[Passage]) -> Selection:
        """The sentences that answer ``question``, in the order to show them."""
        cfg = self.config
        intent = question_intent(question)
        cands = self._candidates(passages)
        if not cands:
            return Selection([], intent)
        terms = self.question_terms(question)
        weights = _term_weights(terms, cands)
        # The question's names locate its subject, which the sources share (the floor wants
        # them there); its other words locate the fact ("What did the fossils found in the
        # Burgess Shale lack?": "lacked", not "Burgess Shale").
        for t in self._name_stems(question) & weights.keys():
            weights[t] *= cfg.name_weight
        total = sum(weights.values()) or 1.0
        ranks = {p.n: i for i, p in enumerate(passages)}
        asked = {kind: self._forms(answer_tokens(question, kind))
                 for kind in ("number", "date", "name")}
        wanted = frozenset(terms)
        kind = intent.name_kind or intent.wants or ""  # the answer type sentences must hold
        typed: set[int] = set()  # the candidates holding what the question asks for
        for i, c in enumerate(cands):
            c.lexical = self._context(i, cands, weights, total)
            # (Not for stories: they follow the topic through the posts, whatever each adds.)
            if (intent.wants and not intent.story
                    and self._forms(answer_tokens(c.text, kind)) - asked[intent.wants]):
                c.bonus += cfg.type_bonus
                typed.add(i)
            if c.position == 0:
                c.bonus += cfg.lead_bonus
            c.bonus -= cfg.rank_penalty * ranks.get(c.n, 0)
            c.score = cfg.lexical_weight * c.lexical + c.bonus
        if not intent.story:
            # A sentence that only restates the question ("Самолёт совершил аварийную посадку в
            # Якутии." for "какой самолёт совершил аварийную посадку в Якутии?") answers nothing;
            # its words and its high cosine would still rank it first.
            # One that adds what the question asks for (the number for "сколько") is the answer
            # however many of the question's words it repeats.
            novel = [c for i, c in enumerate(cands)
                     if i in typed or not c.stems
                     or len(c.stems - wanted) / len(c.stems) >= cfg.min_novelty]
            cands = novel or cands
        if self.dense:
            self._dense_scores(question, cands)
        cands.sort(key=lambda c: c.score, reverse=True)
        if intent.story:
            chosen = self._choose(cands, cfg.story_sentences, cfg.story_chars, one_per_post=True,
                                  keep_ratio=cfg.story_keep_ratio)
            chosen.sort(key=lambda c: (c.date, -c.score), reverse=intent.newest_first)
        else:
            chosen = self._choose(cands, cfg.max_sentences, cfg.max_chars, one_per_post=False)
        stems = frozenset(terms)
        # A factoid's sentences fit max_chars together (_choose), so only a long first one is
        # cut, keeping what the question asks for (the date for "когда"); a story's share it.
        if intent.story:
            return Selection([self._pick(c, stems, self._shared_limit(len(chosen)))
                              for c in chosen], intent)
        return Selection([self._pick(c, stems | self._forms(answer_tokens(c.text, kind)),
                                     cfg.max_chars) for c in chosen], intent)

    def _context(self, i: int, cands: list[_Candidate], weights: dict[str, float],
                 total: float) -> float:
        """The match of candidate ``i``: its own, or read with the two sentences before it in
        its post when that is more.

        News and encyclopedias state the subject first and the fact after it ("Самолёт сел в
        Якутии. Один пассажир погиб.", "Warsaw's first stock exchange was established in 1817
        … It was re-established in April 1991"): a sentence inherits part of the match of the
        two before it — the better of that share of theirs and, when it adds question words
        of its own, its words together with theirs (each word counted once, theirs at the
        share), so subject and fact split over two sentences match as one.
        """
        cfg = self.config
        c = cands[i]
        mine = {t for t in c.stems if t in weights}
        own = sum(weights[t] for t in mine) / total
        inherited = 0.0
        union, held, adds = own, set(mine), True
        for back in (1, 2):
            if i - back < 0 or cands[i - back].n != c.n:
                break
            share = cfg.context_weight ** back
            prev = {t for t in cands[i - back].stems if t in weights}
            inherited = max(inherited, share * sum(weights[t] for t in prev) / total)
            adds = adds and bool(mine - prev)
            if adds:
                union += share * sum(weights[t] for t in prev - held) / total
                held |= prev
        return max(inherited, union)

    def _name_stems(self, question: str) -> set[str]:
        """The stems of the question's names and Latin words (:func:`question_specifics`)."""
        out: set[str] = set()
        for kind, form in question_specifics(question, self.analyzer):
            if kind != "number":
                out.update(self.analyzer.tokens(form))
                out.add(self.analyzer.stem(form) or form)
        return out

    def _forms(self, tokens: set[str]) -> set[str]:
        """Answer tokens by stem, so "Судже" in the question is "Суджу" in a sentence."""
        return {(self.analyzer.stem(t) or t) if " " not in t else t for t in tokens}

    def question_terms(self, question: str) -> list[str]:
        """The question's stems without question words, in order, each once."""
        skip = {self.analyzer.stem(w) for w in QUESTION_WORDS} | QUESTION_WORDS
        return list(dict.fromkeys(t for t in self.analyzer.tokens(question) if t not in skip))

    def _dense_scores(self, question: str, cands: list[_Candidate]) -> None:
        cfg = self.config
        assert self.embed_query is not None and self.embed_passages is not None
        top = sorted(cands, key=lambda c: c.score, reverse=True)[:cfg.dense_candidates]
        q = _unit(self.embed_query(question))
        vectors = self.embed_passages([c.text for c in top])
        for c, v in zip(top, vectors, strict=True):
            c.vector = _unit(v)
            c.dense = _dot(q, c.vector)
        best = max(c.dense for c in top if c.dense is not None)
        for c in top:
            # Relative to the best candidate: e5 cosines sit in a narrow band whose level
            # depends on the question, so only the differences tell.
            c.score += cfg.dense_weight * ((c.dense or 0.0) - best)
        # The candidates not embedded rank below every embedded one of equal lexical score.
        floor = min(c.score for c in top) if top else 0.0
        for c in cands:
            if c.dense is None:
                c.score = min(c.score, floor - 1e-6)

    # -- without a question -----------------------------------------------------------------------

    def summarise(self, passages: Sequence[Passage], max_sentences: int = 2,
                  max_chars: int | None = None) -> list[Pick]:
        """1-``max_sentences`` sentences that sum up a story of posts, oldest first.

        A sentence is central when many of the other posts share its terms and its embedding is
        close to the centroid of the candidates'; a post's lead sentence is preferred.
        """
        cfg = self.config
        cands = self._candidates(passages)
        if not cands:
            return []
        posts_with: Counter[str] = Counter()
        for n in {c.n for c in cands}:
            posts_with.update(set().union(*(c.stems for c in cands if c.n == n)))
        others = max(1, len({c.n for c in cands}) - 1)
        for c in cands:
            if c.stems:
                shared = sum(posts_with[t] - 1 for t in c.stems) / others
                c.lexical = shared / math.sqrt(len(c.stems))
            c.score = c.lexical + (cfg.lead_bonus * 4 if c.position == 0 else 0.0)
        top_lexical = max(c.lexical for c in cands) or 1.0
        for c in cands:  # on the scale of the dense part: the best sentence scores 1
            c.score = c.lexical / top_lexical + (0.3 if c.position == 0 else 0.0)
        if self.embed_passages is not None and cfg.dense_candidates > 0:
            top = sorted(cands, key=lambda c: c.score, reverse=True)[:cfg.dense_candidates * 2]
            vectors = [_unit(v) for v in self.embed_passages([c.text for c in top])]
            centroid = _unit([sum(xs) for xs in zip(*vectors, strict=True)])
            for c, v in zip(top, vectors, strict=True):
                c.vector, c.dense = v, _dot(v, centroid)
            best = max(c.dense for c in top if c.dense is not None)
            for c in top:
                c.score += cfg.dense_weight * ((c.dense or 0.0) - best)
        cands.sort(key=lambda c: c.score, reverse=True)
        chosen = self._choose(cands, max_sentences, max_chars or cfg.max_chars,
                              one_per_post=True, keep_ratio=0.0)
        chosen.sort(key=lambda c: (c.date, c.n))
        return [self._pick(c, frozenset(), self._shared_limit(len(chosen))) for c in chosen]

    # -- shared -----------------------------------------------------------------------------------

    def _candidates(self, passages: Sequence[Passage]) -> list[_Candidate]:
        out: list[_Candidate] = []
        for p in passages:
            kept = [s for s in split_sentences(p.text) if not is_content_free(s)]
            for position, sentence in enumerate(kept[:self.config.sentences_per_post]):
                stems = frozenset(self.analyzer.tokens(_URL.sub(" ", sentence)))
                out.append(_Candidate(p.n, sentence, p.date, position, stems))
        return out

    def _choose(self, ranked: list[_Candidate], most: int, budget: int, *, one_per_post: bool,
                keep_ratio: float | None = None) -> list[_Candidate]:
        ratio = self.config.keep_ratio if keep_ratio is None else keep_ratio
        chosen: list[_Candidate] = []
        used = 0
        best = ranked[0].score
        for c in ranked:
            if len(chosen) >= most:
                break
            if chosen:
                if c.score < best - abs(best) * (1 - ratio) or (best > 0 and c.score <= 0):
                    break
                if one_per_post and any(o.n == c.n for o in chosen):
                    continue
                if used + len(c.text) > budget or any(self._same(c, o) for o in chosen):
                    continue
            chosen.append(c)
            used += min(len(c.text), budget)
        return chosen

    def _same(self, a: _Candidate, b: _Candidate) -> bool:
        """Near-duplicates: most stems of the shorter one in the other, or almost equal vectors."""
        small = min(len(a.stems), len(b.stems))
        if small and len(a.stems & b.stems) / small >= self.config.duplicate_overlap:
            return True
        if a.vector is not None and b.vector is not None:
            return _dot(a.vector, b.vector) >= self.config.duplicate_cosine
        return False

    def _shared_limit(self, count: int) -> int:
        """Characters each of ``count`` sentences sharing ``max_chars`` may show (≥ 120)."""
        return self.config.max_chars if count <= 1 else max(120, self.config.max_chars // count)

    def _pick(self, c: _Candidate, stems: frozenset[str], limit: int) -> Pick:
        text = c.text
        if len(text) > limit:
            # The stretch with the question's words, spanning at most 2/3 of it: the fact
            # usually follows the words naming its subject, and a window they fill cuts it off.
            text, _ = snippet_with_highlights(text, stems, limit,
                                              cluster_width=limit * 2 // 3 if stems else None)
        return Pick(c.n, text, c.date, c.position, round(c.score, 4), round(c.lexical, 4),
                    None if c.dense is None else round(c.dense, 4))

    def with_config(self, **changes: object) -> SentenceSelector:
        """The same selector with some :class:`SelectorConfig` fields changed."""
        return SentenceSelector(self.embed_query, self.embed_passages,
                                config=replace(self.config, **changes),  # type: ignore[arg-type]
                                text_analyzer=self.analyzer)


def cite(picks: Sequence[Pick], *, dated: bool = False) -> str:
    """``sentence [n] sentence [m]``; with ``dated``, one line per sentence, its date in front."""
    if dated:
        return "\n".join(f"{_day(p.date)}: {p.text} [{p.n}]" if p.date else f"{p.text} [{p.n}]"
                         for p in picks)
    return " ".join(f"{p.text} [{p.n}]" for p in picks)


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d.%m.%Y")


def _term_weights(terms: Sequence[str], cands: Sequence[_Candidate]) -> dict[str, float]:
    n = len(cands)
    df = Counter(t for c in cands for t in set(terms) & c.stems)
    return {t: math.log(1 + n / max(1, df[t])) for t in terms}


def _unit(v: Vector) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def _dot(a: Vector, b: Vector) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
