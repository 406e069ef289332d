"""The notebooks in notebooks/ run top to bottom on the embedded defaults, and are committed clean.

Each notebook is executed with nbclient in a kernel running this interpreter (``sys.executable``,
i.e. the venv's python, whatever kernelspecs the machine has), with cwd = notebooks/ for 01 and 02
and the repository root for 03 (both must work).  TMPDIR points at one folder per test session, so
the notebooks' work folder (``tempfile.gettempdir()/tgrag-notebooks``) is isolated from the
developer's and shared between 01 and 03 as it is for a user (03 reuses 01's index).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_retrieval_eval.ipynb", "03_channel_analytics.ipynb"]
CELL_TIMEOUT = 300


def run_notebook(name: str, cwd: Path) -> nbformat.NotebookNode:
    """Execute a notebook; nbclient raises CellExecutionError on the first failing cell."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # No kernel dirs: only ipykernel's own "python3" spec, which launches sys.executable.  A
    # user-level python3 kernelspec pointing at another interpreter is never picked up.
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r} expected, found {len(cells)}"
    return cells[0]


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell showed: stream text and text/plain or text/markdown results."""
    # Stream outputs are pieces of one text (a kernel may split one print() across several);
    # a result is a block of its own.
    shown = ""
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            shown += out.text
        elif out.output_type in ("execute_result", "display_data"):
            data = out.get("data", {})
            if shown and not shown.endswith("\n"):
                shown += "\n"
            shown += (data.get("text/markdown") or data.get("text/plain", "")).rstrip("\n") + "\n"
    return shown.rstrip("\n")


def images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for c in nb.cells for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


def stderr_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.text for c in nb.cells for o in c.get("outputs", [])
                   if o.output_type == "stream" and o.name == "stderr")


@pytest.fixture(scope="module")
def notebook_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebooks-tmp")


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch, notebook_tmp: Path) -> Path:
    """The kernel inherits this process's environment (conftest already removed TGRAG_*)."""
    monkeypatch.setenv("TMPDIR", str(notebook_tmp))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return notebook_tmp


# -- committed state ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_stripped(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for n, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name} cell {n} has outputs: strip them before committing"
        assert cell.execution_count is None, f"{name} cell {n} has an execution count"
    assert nb.cells[0].cell_type == "markdown"


# -- execution ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart(kernel_env: Path) -> None:
    nb = run_notebook("01_quickstart.ipynb", cwd=NOTEBOOKS)
    stats = text_of(tagged(nb, "stats"))
    assert stats.startswith("171 posts"), stats
    assert "@moskva_segodnya_news" in stats
    first = text_of(tagged(nb, "search-plain")).split("\n2. ")[0]
    assert "@dengi_i_banki" in first and "ставк" in first.lower(), first
    channel = text_of(tagged(nb, "search-channel"))
    hits = re.findall(r"^\d\. \[[\d.]+\] (@\S+) (\S+)", channel, flags=re.M)
    assert len(hits) == 3 and {c for c, _ in hits} == {"@moskva_segodnya_news"}, channel
    assert "метро" in channel.lower()
    dated = re.findall(r"^\d\. \[[\d.]+\] @\S+ (\S+)", text_of(tagged(nb, "search-tag-dates")),
                       flags=re.M)
    assert dated and all("2024-06-01" <= d <= "2024-09-30" for d in dated), dated
    november = re.findall(r"^\d\. \[[\d.]+\] @\S+ (\S+)", text_of(tagged(nb, "search-dates")),
                          flags=re.M)
    assert november and all(d.startswith("2024-11") for d in november), november
    ask = text_of(tagged(nb, "ask"))
    assert "mode: extractive" in ask and "[1]" in ask and "t.me/dengi_i_banki/" in ask, ask
    assert (kernel_env / "tgrag-notebooks" / "sample").is_dir()  # not the repo's ./data
    assert not (NOTEBOOKS / "data").exists()


@pytest.mark.slow
def test_channel_analytics(kernel_env: Path) -> None:
    # cwd = the repository root this time; after test_quickstart the index is reused.
    nb = run_notebook("03_channel_analytics.ipynb", cwd=REPO)
    table = text_of(tagged(nb, "posts-table"))
    assert "171 posts in 4 channels" in table, table
    assert images(nb) >= 3
    tags = text_of(tagged(nb, "top-tags"))
    assert "@dengi_i_banki: #ставка" in tags or "#ключевая_ставка" in tags, tags
    assert "2024-" in text_of(tagged(nb, "monthly-table"))
    assert "Traceback" not in stderr_of(nb)


@pytest.mark.slow
def test_retrieval_eval(kernel_env: Path) -> None:
    from tests.conftest import SHARED

    if not (SHARED / "eval" / "danetqa").is_dir():
        pytest.skip(f"needs {SHARED / 'eval' / 'danetqa'}; the skip path is tested below")
    nb = run_notebook("02_retrieval_eval.ipynb", cwd=NOTEBOOKS)
    out = text_of(tagged(nb, "metrics"))
    assert "| hybrid |" in out, out
    modes: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert set(modes) == {"dense", "sparse", "hybrid"}
    for mode, metrics in modes.items():
        assert 0.3 < metrics["ndcg@10"] <= 1.0, (mode, metrics)
    assert images(nb) == 1


@pytest.mark.slow  # starts a kernel and imports the stack, a few seconds
def test_retrieval_eval_without_shared_data(kernel_env: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("TGRAG_SHARED_DIR", str(kernel_env / "no-shared-here"))
    nb = run_notebook("02_retrieval_eval.ipynb", cwd=NOTEBOOKS)
    assert "Skipped: the DaNetQA set is not at" in text_of(tagged(nb, "dataset"))
    assert images(nb) == 0 and text_of(tagged(nb, "metrics")) == ""


FUSION_WORDS = {"rrf": "RRF", "minmax": "min-max", "zscore": "z-score"}


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_retrieval_eval.ipynb"])
def test_notebooks_name_the_shipped_hybrid_fusion(name: str) -> None:
    # They said hybrid fuses by weighted RRF by default; the default is min-max score fusion.
    from rag.settings import Settings

    default = FUSION_WORDS[Settings.model_fields["fusion"].default]
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    hybrid = re.search(r"`hybrid`(.*?)(\n\n|\n\*|$)", text, flags=re.S)
    assert hybrid and default in hybrid.group(1), hybrid and hybrid.group(1)
    others = [w for k, w in FUSION_WORDS.items() if w != default]
    for word in others:
        claim = rf"\b{word}\b[^.;]*\bdefault\b|\bdefault\b[^.;]*\b{word}\b"
        assert not re.search(claim, text), (word, re.search(claim, text))
