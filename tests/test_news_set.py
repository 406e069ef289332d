"""eval.news_set: the committed news question set and the BEIR folder built from raw posts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.answers import load_gold, load_no_answer
from eval.beir import load_beir
from eval.news_set import SETS, load_questions, main, write_dataset
from rag.errors import InputError


def test_the_committed_set_is_well_formed() -> None:
    answerable, no_answer = load_questions()
    assert len(answerable) >= 50 and len(no_answer) >= 50
    ids = [q["id"] for q in answerable + no_answer]
    assert len(ids) == len(set(ids))
    for q in answerable:
        assert q["question"].endswith("?") and q["answers"] and q["post_ids"]
        assert all(pid.startswith("tg:") for pid in q["post_ids"])
        assert set(q) == {"id", "question", "answers", "post_ids"}  # no post texts
    assert all(set(q) == {"id", "question"} for q in no_answer)


def _raw(folder: Path) -> Path:
    folder.mkdir()
    posts = [
        {"message_id": 1, "sender_id": -1001000000001, "date": "2024-11-01T10:00:00+00:00",
         "channel": "Новости", "text": "Паром между Сочи и Турцией вместит **450** пассажиров."},
        {"message_id": 2, "sender_id": -1001000000001, "date": "2024-11-02T10:00:00+00:00",
         "channel": "Новости", "text": "В Москве ожидается снег."},
        {"message_id": 3, "sender_id": -1001000000001, "date": "2024-11-03T10:00:00+00:00",
         "channel": "Новости", "text": "Курс рубля снизился."},
    ]
    (folder / "1001000000001_messages.json").write_text(json.dumps(posts, ensure_ascii=False),
                                                       encoding="utf-8")
    return folder


def _sets(folder: Path, post_id: str = "tg:1000000001:1") -> Path:
    folder.mkdir()
    (folder / "questions.jsonl").write_text(json.dumps(
        {"id": "a001", "question": "Сколько пассажиров вместит паром?", "answers": ["450"],
         "post_ids": [post_id]}, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "no_answer.jsonl").write_text(json.dumps(
        {"id": "n001", "question": "Кто выиграл чемпионат мира 2018 года?"},
        ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def test_write_dataset_makes_a_beir_folder_eval_answers_reads(tmp_path: Path) -> None:
    out = tmp_path / "news"
    counts = write_dataset(_raw(tmp_path / "raw"), out, max_corpus=2, seed=1,
                           folder=_sets(tmp_path / "sets"))
    assert counts == {"docs": 2, "answerable": 1, "no_answer": 1}
    ds = load_beir(out)
    assert "tg:1000000001:1" in ds.corpus and len(ds.corpus) == 2
    # the text as the readers give it to the pipeline (markup stripped)
    assert ds.corpus["tg:1000000001:1"].text == "Паром между Сочи и Турцией вместит 450 пассажиров."
    assert ds.qrels == {"a001": {"tg:1000000001:1": 1}}
    assert load_gold(ds) == {"a001": ["450"]}
    assert load_no_answer(ds) == {"n001": "Кто выиграл чемпионат мира 2018 года?"}
    full = write_dataset(tmp_path / "raw", tmp_path / "full", folder=tmp_path / "sets")
    assert full["docs"] == 3


def test_a_question_post_missing_from_the_posts_is_an_error(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    raw = _raw(tmp_path / "raw")
    sets = _sets(tmp_path / "sets", post_id="tg:1000000001:99")
    with pytest.raises(InputError, match="1 question posts are not in"):
        write_dataset(raw, tmp_path / "out", folder=sets)
    assert main(["--out", str(tmp_path / "x"), "--posts", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert SETS.name == "news_ru"
