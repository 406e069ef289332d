"""``tgrag eval answers``: the real QA over a tiny dataset, graded by the judge; GigaChat is the
fake server spoken to through the real SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from eval.answers import contains_gold, evaluate_answers, first_cited_sentence, parse_verdict
from rag.errors import LLMError
from rag.qa import SYSTEM_PROMPT as QA_SYSTEM_PROMPT
from rag.settings import Settings
from tests.fake_gigachat import CREDENTIALS, FakeGigaChat, Reply, gigachat_llm
from tests.test_eval import CORPUS, write_dataset

QUERIES = [
    {"_id": "q1", "text": "какую ставку установил ЦБ?", "metadata": {"answer": "16%"}},
    {"_id": "q2", "text": "где открыли станцию метро"},  # gold from ../qa.jsonl, as xquad_r_en
    {"_id": "q3", "text": "что обещают синоптики на выходные?"},  # no gold
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td2\t1\n"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = write_dataset(tmp_path / "sets" / "tiny", CORPUS, QUERIES, QRELS)
    (tmp_path / "sets" / "qa.jsonl").write_text(
        '{"id": "q2", "answers": ["в Москве"], "context_id": "d3"}\n'
        '{"id": "q9", "answers": ["не из этого набора"]}\n', encoding="utf-8")
    return root


def verdict(**fields: object) -> str:
    return json.dumps({"unsupported": [], "reason": "проверено", **fields}, ensure_ascii=False)


# -- the verdict ----------------------------------------------------------------------------------


def test_parse_verdict_fenced_and_with_preamble() -> None:
    v = parse_verdict("```json\n" + verdict(faithfulness=1, correctness=0.5) + "\n```", True)
    assert (v.faithfulness, v.correctness, v.reason) == (1.0, 0.5, "проверено")
    v = parse_verdict('Моя оценка: {"faithfulness": 0.25, "correctness": null, '
                      '"unsupported": "одно"} Готово.', False)
    assert (v.faithfulness, v.correctness, v.unsupported) == (0.25, None, ["одно"])
    # without a gold answer, correctness is not taken even if given
    assert parse_verdict(verdict(faithfulness=1, correctness=1), False).correctness is None


@pytest.mark.parametrize(("reply", "message"), [
    ("Ответ хороший, 10 из 10.", "no JSON object"),
    (verdict(faithfulness=1.5, correctness=1), "faithfulness is outside 0..1"),
    (verdict(faithfulness=True, correctness=1), "faithfulness is not a number"),
    (verdict(faithfulness="0.5", correctness=1), "faithfulness is not a number"),
    (verdict(faithfulness=1), "correctness is not a number: None"),
])
def test_parse_verdict_rejects(reply: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_verdict(reply, True)


# -- whole runs -----------------------------------------------------------------------------------


def test_eval_answers_end_to_end(fake: FakeGigaChat, dataset: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "DATA_DIR": str(tmp_path / "data"), "LLM": "gigachat",
        "GIGACHAT_CREDENTIALS": CREDENTIALS, "GIGACHAT_BASE_URL": fake.base_url,
        "GIGACHAT_AUTH_URL": fake.auth_url, "GIGACHAT_VERIFY_SSL": "false",
        "LLM_RETRY_BACKOFF": "0", "QA_MIN_SCORE": "0", "QA_MIN_NAME_SHARE": "0", "QA_TOP_K": "2",
    }.items():
        monkeypatch.setenv(f"TGRAG_{key}", value)
    fake.then(
        Reply(content="ЦБ повысил ставку до 16% [1] [9]."),  # QA q1 ([9] is invented)
        Reply(content="```json\n" + verdict(faithfulness=1, correctness=1) + "\n```"),
        Reply(content="Станцию открыли в Москве [1]."),  # QA q2
        Reply(content="Оценка: " + verdict(faithfulness=0.5, correctness=0.5,
                                           unsupported=["станцию открыли"])),
        Reply(content="Обещают снегопад [1]."),  # QA q3
        Reply(content="Ответ в целом верный."),  # unreadable verdict ...
        Reply(content=verdict(faithfulness=2)),  # ... and again: judge failed
    )
    out = tmp_path / "out" / "answers.json"
    result = CliRunner().invoke(app, ["eval", "answers", "--dataset", str(dataset),
                                      "--json", str(out)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "| faithfulness (claims supported by cited posts) | 0.7500 | 2 |" in result.stdout
    assert "| correctness (vs the gold answer) | 0.7500 | 2 |" in result.stdout
    assert "| relevant post among the sources | 1.0000 | 3 |" in result.stdout
    assert "judge: 2 judged, 1 failed; gold answers: 2" in result.stdout
    assert "answers: 3/3" in result.stderr

    data = json.loads(out.read_text())
    assert data["means"] == {"faithfulness": 0.75, "correctness": 0.75, "source_hit": 1.0}
    assert data["counts"] == {"queries": 3, "generative": 3, "extractive": 0, "not_found": 0,
                              "qa_failed": 0, "judged": 2, "judge_failed": 1, "with_gold": 2}
    q1, q2, q3 = data["items"]
    assert q1["answer"] == "ЦБ повысил ставку до 16% [1]." and q1["sources"][0] == "d1"
    assert (q1["gold"], q2["gold"], q3["gold"]) == (["16%"], ["в Москве"], [])
    assert q2["unsupported"] == ["станцию открыли"] and q2["sources"][0] == "d3"
    assert q3["faithfulness"] is None and q3["error"].startswith("judge: unreadable verdict")

    # the QA is the real one; the judge sees what the QA was given, and the gold answer
    assert fake.requests[0]["messages"][0]["content"] == QA_SYSTEM_PROMPT
    judge_q1 = fake.requests[1]["messages"][1]["content"]
    assert "Вопрос пользователя: какую ставку установил ЦБ?" in judge_q1
    assert "[1] Ставка\nЦентробанк повысил ключевую ставку до 16%." in judge_q1
    assert "Ответ системы:\nЦБ повысил ставку до 16% [1]." in judge_q1
    assert "Эталонный ответ: 16%" in judge_q1
    assert "Эталонный ответ: в Москве" in fake.requests[3]["messages"][1]["content"]
    judge_q3 = fake.requests[5]["messages"][1]["content"]
    assert "Эталонный ответ: нет" in judge_q3 and "поставь null" in judge_q3
    assert fake.requests[6]["messages"][-1]["content"].startswith("Не удалось прочитать оценку")


def test_not_found_answers_count_as_incorrect_without_a_judge(
        fake: FakeGigaChat, dataset: Path, settings: Settings) -> None:
    strict = settings.model_copy(update={"qa_min_score": 2.0})  # no post is ever a source
    result = evaluate_answers(dataset, strict, gigachat_llm(fake))
    assert fake.chat_calls == 0
    data = result.to_json()
    assert data["counts"]["not_found"] == 3
    assert data["means"] == {"faithfulness": None, "correctness": 0.0, "source_hit": 0.0}
    assert "| faithfulness (claims supported by cited posts) | — | 0 |" in result.to_markdown()


def test_llm_failures_are_counted_and_fatal_only_when_all_fail(
        fake: FakeGigaChat, dataset: Path, settings: Settings) -> None:
    loose = settings.model_copy(update={"qa_min_score": 0.0, "qa_min_name_share": 0.0})
    llm = gigachat_llm(fake, max_retries=0)
    fake.then(
        Reply(status=500),  # q1: the QA fails
        Reply(content="Станцию открыли [1]."), Reply(status=503),  # q2: the judge fails
        Reply(content="Снегопад [1]."), Reply(content=verdict(faithfulness=0.5)),  # q3: fine
    )
    result = evaluate_answers(dataset, loose, llm)
    counts = result.to_json()["counts"]
    assert (counts["qa_failed"], counts["judged"], counts["judge_failed"]) == (1, 1, 1)
    assert "HTTP 500" in (result.items[0].error or "")
    assert (result.items[1].error or "").startswith("judge: GigaChat server error (HTTP 503)")
    assert result.means()[0]["faithfulness"] == 0.5

    fake.then(*[Reply(status=500)] * 2)
    with pytest.raises(LLMError, match="every LLM call failed.*HTTP 500"):
        evaluate_answers(dataset, loose, llm, limit=2)
    assert fake.chat_calls == 7


def test_without_an_llm_answers_are_graded_offline(dataset: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # (Until issue 15 this run was skipped with exit 0; now it grades the extractive answers.)
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TGRAG_QA_MIN_SCORE", "0")
    monkeypatch.setenv("TGRAG_QA_MIN_NAME_SHARE", "0")
    monkeypatch.setenv("TGRAG_QA_TOP_K", "2")
    queries = dataset / "queries.jsonl"
    queries.write_text(queries.read_text(encoding="utf-8") + json.dumps(
        {"_id": "n1", "text": "кто выиграл чемпионат мира по футболу 2018 года?",
         "metadata": {"no_answer": True}}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "offline.json"
    result = CliRunner().invoke(app, ["eval", "answers", "--dataset", str(dataset),
                                      "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("offline: extractive answers graded by gold-answer")
    assert "| gold answer in the first cited sentence | 1.0000 | 2 |" in result.stdout
    assert "| not found (questions without one) | 0.0000 | 1 |" in result.stdout
    data = json.loads(out.read_text())
    assert data["grading"] == "offline" and data["model"] == ""
    assert set(data["means"]) == {"in_answer", "in_first_sentence", "answer_chars",
                                  "not_found", "no_answer_not_found", "source_hit"}
    assert data["means"]["in_answer"] == 1.0 and data["means"]["not_found"] == 0.0
    assert data["means"]["source_hit"] == 1.0 and data["n"]["source_hit"] == 3
    # q1..q3 answerable (two with gold), n1 marked as having no answer: answered here (floor 0)
    assert data["counts"] == {"queries": 4, "generative": 0, "extractive": 4, "not_found": 0,
                              "qa_failed": 0, "with_gold": 2, "no_answer": 1}
    q1 = data["items"][0]
    assert q1["answer"] == "По найденным постам: Центробанк повысил ключевую ставку до 16%. [1]"
    assert q1["in_first_sentence"] is True and q1["mode"] == "extractive"
    assert data["items"][3]["no_answer"] is True and data["items"][3]["source_hit"] is None
    lengths = [len(it["answer"]) for it in data["items"]]
    assert data["means"]["answer_chars"] == round(sum(lengths) / 4, 4)

    bad = CliRunner().invoke(app, ["eval", "answers", "--dataset", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


def test_offline_flag_grades_offline_with_an_llm_configured(
        fake: FakeGigaChat, dataset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"DATA_DIR": str(tmp_path / "data"), "LLM": "gigachat",
                       "GIGACHAT_CREDENTIALS": CREDENTIALS, "GIGACHAT_BASE_URL": fake.base_url,
                       "GIGACHAT_AUTH_URL": fake.auth_url, "QA_MIN_SCORE": "2"}.items():
        monkeypatch.setenv(f"TGRAG_{key}", value)
    result = CliRunner().invoke(app, ["eval", "answers", "--dataset", str(dataset), "--offline"])
    assert result.exit_code == 0, result.stderr
    assert fake.chat_calls == 0
    # Nothing passes a floor of 2: every answerable question is "not found" and counts 0.
    assert "| not found (questions with an answer) | 1.0000 | 3 |" in result.stdout
    assert "| gold answer in the answer | 0.0000 | 2 |" in result.stdout
    assert "| answer length, characters | — | 0 |" in result.stdout


def test_first_cited_sentence_and_containment() -> None:
    assert first_cited_sentence("По найденным постам: ЦБ поднял ставку до 21%. [1] Банки "
                                "ждут 23%. [2]") == "ЦБ поднял ставку до 21%."
    assert first_cited_sentence("По найденным постам, по датам:\n14.11.2023: Ставка 16%. [2]"
                                "\n25.10.2024: Ставка 21%. [1]") == "Ставка 16%."
    assert first_cited_sentence("Ставку повысили. ЦБ поднял её до 21% [1][2], банки ждут "
                                "23% [3].") == "ЦБ поднял её до 21%"
    assert first_cited_sentence("Без ссылок.") == "Без ссылок."
    assert contains_gold("Станцию открыли  в МОСКВЕ.", ["в Москве"])
    assert contains_gold("Трасса «Ё-мобиль» — открыта", ['"Е-мобиль"'])
    assert not contains_gold("Станцию открыли в Казани.", ["в Москве", "Москва"])
    assert not contains_gold("ничего", [])
