"""``tgrag eval generate``: question checks, retries, failures, and the BEIR round trip into
``tgrag eval retrieval``, with GigaChat played by the fake server through the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import app
from eval.beir import load_beir
from eval.generate import (
    COPY_WORDS,
    SYSTEM_PROMPT,
    GenerateReport,
    Rejected,
    SourcePost,
    ask_for_question,
    check_question,
    generate_dataset,
    longest_shared_run,
    parse_reply,
    words,
)
from eval.llm_util import FailureGuard, extract_json
from ingest.pipeline import PostPipeline
from rag.errors import InputError, LLMError
from rag.index import Index
from rag.settings import Settings
from tests.conftest import module_settings
from tests.fake_gigachat import CREDENTIALS, FakeGigaChat, Reply, gigachat_llm
from tests.search_corpus import corpus

POSTS = [p for p in corpus() if p.message_id <= 4]  # 4 posts in each of 3 channels
# The fake's "LLM": one hand-written question (and answer) per post, keyed by a word of the post.
QUESTIONS = {
    "ключевую": ("До какого уровня ЦБ поднял ставку?", "до 16%"),
    "Инфляция": ("Как изменился рост цен весной по данным статистиков?", "замедлился до 7,8%"),
    "Курс доллара": ("Когда доллар подешевел ниже 90 рублей?", "впервые с начала года"),
    "Минфин": ("Сколько денег Минфин занял через ОФЗ?", "50 млрд рублей"),
    "Большой кольцевой": ("Сколько станций открыли на БКЛ?", "три"),
    "МЦД-2": ("Почему электрички МЦД-2 будут ходить реже?", "ремонт путей"),
    "тройкой": ("Подорожает ли проезд по карте Тройка?", "нет, до конца года"),
    "Садовом": ("Где в центре закроют полосы из-за ремонта дороги?", "на Садовом кольце"),
}
CHANNEL_POSTS = {p.doc_id: p for p in POSTS if p.channel_id in (1001, 1002)}


def post_in(request: dict[str, Any]) -> str:
    prompt = request["messages"][1]["content"]
    return prompt.split("<<<\n", 1)[1].split("\n>>>", 1)[0]


def responder(request: dict[str, Any]) -> str:
    text = post_in(request)
    for key, (question, answer) in QUESTIONS.items():
        if key in text:
            return "```json\n" + json.dumps({"question": question, "answer": answer},
                                            ensure_ascii=False) + "\n```"
    return '{"question": "Что нового?", "answer": ""}'


@pytest.fixture
def fake() -> Iterator[FakeGigaChat]:
    server = FakeGigaChat(responder).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def filled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed data folder with 12 posts in three channels (the CLI opens it itself)."""
    settings = module_settings(tmp_path_factory, "gen")
    with Index.open(settings, purpose="pytest eval generate") as index:
        assert PostPipeline(index).ingest(POSTS).new == len(POSTS)
    return settings.data_dir


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch, fake: FakeGigaChat, filled_dir: Path) -> Path:
    for key, value in {
        "DATA_DIR": str(filled_dir), "LLM": "gigachat", "GIGACHAT_CREDENTIALS": CREDENTIALS,
        "GIGACHAT_BASE_URL": fake.base_url, "GIGACHAT_AUTH_URL": fake.auth_url,
        "GIGACHAT_VERIFY_SSL": "false", "LLM_RETRY_BACKOFF": "0", "LLM_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(f"TGRAG_{key}", value)
    return filled_dir


@pytest.fixture
def filled_index(filled_dir: Path) -> Iterator[Index]:
    settings = Settings(data_dir=filled_dir, _env_file=None)  # type: ignore[call-arg]
    with Index.open(settings, purpose="pytest") as index:
        yield index


def source(text: str) -> SourcePost:
    return SourcePost("tg:1:1", text, {"channel_title": "Экономика за день"})


ECON_1 = POSTS[0].text


# -- checking replies -----------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "question", "answer"), [
    ('```json\n{"question": "Когда подешевел доллар?", "answer": "в мае"}\n```',
     "Когда подешевел доллар?", "в мае"),
    ('Вот вариант: {"question": "«Когда подешевел доллар?»"}', "Когда подешевел доллар?", None),
    ("Вопрос: Когда подешевел доллар?\nОтвет: в мае", "Когда подешевел доллар?", "в мае"),
    ("Когда подешевел доллар?", "Когда подешевел доллар?", None),
    ('{"question": "Когда\\nподешевел?"}', "Когда\nподешевел?", None),
])
def test_parse_reply(reply: str, question: str, answer: str | None) -> None:
    assert parse_reply(reply) == (question, answer)


def test_parse_reply_json_without_question_is_unreadable() -> None:
    with pytest.raises(Rejected) as rej:
        parse_reply('{"вопрос": "Когда?"}')
    assert rej.value.reason == "unreadable"


@pytest.mark.parametrize(("question", "reason"), [
    ("", "empty"),
    ("Когда\nподешевел доллар?", "multiline"),
    ("Когда подешевел доллар", "no_question_mark"),
    ("Что?", "length"),
    ("Что говорится в этом посте про ставку?", "refers_to_post"),
    ("Какую ставку назвали в тексте?", "refers_to_post"),
    # seven consecutive words of the post
    ("Правда ли, что Банк России повысил ключевую ставку до 16% годовых?", "copies_post"),
    ("До какого уровня ЦБ поднял ставку?", "duplicate"),
])
def test_check_question_rejects(question: str, reason: str) -> None:
    seen = {" ".join(words("До какого уровня ЦБ поднял ставку?"))}
    with pytest.raises(Rejected) as rej:
        check_question(question, ECON_1, seen)
    assert rej.value.reason == reason


def test_check_question_accepts_own_words_and_named_texts() -> None:
    for q in ("До какого уровня ЦБ поднял ставку?",
              "Что изменилось в тексте законопроекта о вкладах?",
              "Почему регулятор повысил ключевую ставку?"):  # 3 shared words: fine
        assert check_question(q, ECON_1, set()) == q
    assert longest_shared_run(words("а Банк России повысил ключевую ставку до"),
                              words(ECON_1)) == COPY_WORDS


def test_extract_json_variants() -> None:
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Оценка: {"a": {"b": 2}} — вот.') == {"a": {"b": 2}}
    assert extract_json('[1, 2] {bad} {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError):
        extract_json("не знаю")


# -- the LLM loop ---------------------------------------------------------------------------------


def test_bad_outputs_are_rejected_then_retried_with_the_reason(fake: FakeGigaChat) -> None:
    fake.then(
        Reply(content="Ставка повышена до 16%."),  # not a question
        Reply(content='{"question": "Банк России повысил ключевую ставку до 16% годовых?"}'),
        Reply(content='```json\n{"question": "Насколько подняли ставку ЦБ?", '
                      '"answer": "до 16%"}\n```'),
    )
    report = GenerateReport(out="x", requested=1, seed=0)
    made = ask_for_question(gigachat_llm(fake), source(ECON_1), report, set())
    assert made == ("Насколько подняли ставку ЦБ?", "до 16%")
    assert report.reasons == {"no_question_mark": 1, "copies_post": 1}
    assert report.llm_calls == 3 and report.rejected == 0
    first, last = fake.requests[0]["messages"], fake.requests[2]["messages"]
    assert (first[0]["role"], first[0]["content"]) == ("system", SYSTEM_PROMPT)
    assert "«Экономика за день»" in first[1]["content"] and ECON_1 in first[1]["content"]
    assert "не копируй формулировки поста" in first[1]["content"].lower()
    # the retry carries the rejected reply and why it was rejected
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant",
                                         "user"]
    assert "знаком «?»" in last[3]["content"] and "своими словами" in last[5]["content"]


def test_tries_are_bounded_and_refusals_skip(fake: FakeGigaChat) -> None:
    fake.then(*[Reply(content="не вопрос")] * 3, Reply(finish_reason="blacklist"))
    llm = gigachat_llm(fake)
    report = GenerateReport(out="x", requested=1, seed=0)
    assert ask_for_question(llm, source(ECON_1), report, set(), tries=3) is None
    assert report.rejected == 1 and report.llm_calls == 3
    assert ask_for_question(llm, source(ECON_1), report, set()) is None
    assert report.refused == 1 and report.llm_calls == 4


def test_failure_guard() -> None:
    err = LLMError("HTTP 500")
    guard = FailureGuard("x", limit=2)
    assert guard.failed(err) is False
    with pytest.raises(LLMError, match="failed 2 times in a row"):
        guard.failed(err)
    guard = FailureGuard("x", limit=2)
    guard.ok()
    assert [guard.failed(err) for _ in range(8)] == [False] * 7 + [True]
    guard.raise_if_all_failed()  # it did succeed once


# -- whole runs -----------------------------------------------------------------------------------


def test_llm_failure_on_a_post_is_counted_not_fatal(fake: FakeGigaChat, filled_index: Index,
                                                    tmp_path: Path) -> None:
    fake.then(Reply(status=500), Reply(content="```\nне JSON и не вопрос\n```"))
    report = generate_dataset(
        filled_index, gigachat_llm(fake, max_retries=0), tmp_path / "ds",
        channels=["econ_daily"], n=4, min_chars=60, tries=1)
    assert report.failed == 1 and report.rejected == 1 and report.tried == 4
    assert report.questions == 2 and report.corpus == 4
    assert report.errors and "HTTP 500" in report.errors[0]
    assert "1 rejected, 0 refused, 1 failed" in report.summary()
    ds = load_beir(tmp_path / "ds")
    assert len(ds.queries) == 2 and len(ds.corpus) == 4


def test_every_call_failing_is_an_llm_error(fake: FakeGigaChat, filled_index: Index,
                                            tmp_path: Path) -> None:
    fake.then(*[Reply(status=500)] * 20)
    with pytest.raises(LLMError, match="failed 5 times in a row.*HTTP 500"):
        generate_dataset(filled_index, gigachat_llm(fake, max_retries=0), tmp_path / "a", n=3,
                         min_chars=60)
    assert fake.chat_calls == 5  # stopped instead of trying all 12 posts
    fake.script.clear()
    fake.then(*[Reply(status=500)] * 4)
    with pytest.raises(LLMError, match="every LLM call failed"):
        generate_dataset(filled_index, gigachat_llm(fake, max_retries=0), tmp_path / "b", n=3,
                         channels=["econ_daily"], min_chars=60)
    assert not (tmp_path / "b").exists()


def test_nothing_long_enough_is_an_input_error(fake: FakeGigaChat, filled_index: Index,
                                               tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no post of at least 10000 characters"):
        generate_dataset(filled_index, gigachat_llm(fake), tmp_path / "a", min_chars=10_000)
    assert fake.chat_calls == 0
    with pytest.raises(InputError, match="unknown channel"):
        generate_dataset(filled_index, gigachat_llm(fake), tmp_path / "a", channels=["nope"])


def test_generate_then_eval_retrieval_through_the_cli(llm_env: Path, fake: FakeGigaChat,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "mine"
    runner = CliRunner()
    result = runner.invoke(app, [
        "eval", "generate", "--channel", "econ_daily", "--channel", "Город и транспорт",
        "-n", "6", "--out", str(out), "--seed", "1", "--min-chars", "60", "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["questions"] == 6 and report["corpus"] == 8 and report["failed"] == 0
    assert report["channels"] == [1001, 1002] and report["model"] == "GigaChat"
    assert "generate: 6/6 questions" in result.stderr

    corpus = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    # every post of the two channels (none of the third), in (channel, message) order
    assert [d["_id"] for d in corpus] == sorted(CHANNEL_POSTS)
    assert corpus[0] == {"_id": "tg:1001:1", "title": "", "text": CHANNEL_POSTS["tg:1001:1"].text,
                         "metadata": {"channel_id": 1001, "channel": "econ_daily",
                                      "channel_title": "Экономика за день", "message_id": 1,
                                      "link": "https://t.me/econ_daily/1",
                                      "date": "2024-05-01T10:00:00+00:00"}}
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    qrels = (out / "qrels.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == 7
    for n, (query, line) in enumerate(zip(queries, qrels[1:], strict=True), start=1):
        post_id = query["metadata"]["post_id"]
        assert line == f"q{n}\t{post_id}\t1" and query["_id"] == f"q{n}"
        expected = next(qa for key, qa in QUESTIONS.items() if key in CHANNEL_POSTS[post_id].text)
        assert (query["text"], query["metadata"]["answer"]) == expected
    generation = json.loads((out / "generation.json").read_text())
    assert generation["seed"] == 1 and generation["prompt_version"] == 1

    # same seed, same sample; an existing dataset is not overwritten without --force
    again = runner.invoke(app, ["eval", "generate", "-n", "6", "--out", str(out)])
    assert again.exit_code == 2 and "already holds a dataset" in again.stderr
    assert "--force" in again.stderr

    scores = tmp_path / "scores.json"
    result = runner.invoke(app, ["eval", "retrieval", "--dataset", str(out), "--modes",
                                 "dense,sparse", "--json", str(scores)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    data = json.loads(scores.read_text())
    assert data["dataset"] == "mine" and data["queries"] == 6 and data["docs"] == 8
    # qrels point at corpus ids the index returns: all 8 posts come back, the relevant one too
    assert data["modes"]["dense"]["recall@10"] == 1.0
    assert data["modes"]["sparse"]["mrr@10"] > 0


def test_without_an_llm_generate_says_to_set_tgrag_llm(filled_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(filled_dir))
    result = CliRunner().invoke(app, ["eval", "generate", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: eval generate needs an LLM, and TGRAG_LLM is 'none'"
    assert lines[1].startswith("hint: set TGRAG_LLM=gigachat")
    assert not (tmp_path / "x").exists()
