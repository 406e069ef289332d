"""Killing a prune (SIGKILL, in a subprocess) and running it again leaves no orphans.

The subprocess is ``tests/crash_prune.py``; it dies at an exact point of the deletion order
(after a batch's store delete, halfway through its docstore deletes, before its catalog delete)
or is killed at a random moment.  After the kill every post is whole or still listed as expired
(so the rerun finds it); after the rerun the expired posts are gone from the store, the docstore
and the catalog, and every other post is exactly as it was.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from ingest.pipeline import PostPipeline
from rag import ids
from rag.index import Index
from rag.settings import Settings
from tests.crash_ingest import CHANNEL_ID, make_posts
from tests.test_crash_safety import Child, actual_points, expected_points

HELPER = Path(__file__).resolve().parent / "crash_prune.py"
N, EXPIRED = 160, 100  # posts 1..100 are dated before the cutoff
POSTS = make_posts(N, 0)
CUTOFF = POSTS[EXPIRED].date - 30  # between posts 100 and 101 (a minute apart)

pytestmark = pytest.mark.slow


class PruneChild(Child):
    """``tests/crash_prune.py`` pruning posts 1..100 in a subprocess."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        super().__init__(data_dir, "--cutoff", str(CUTOFF), *args, helper=HELPER)


def open_index(data_dir: Path) -> Index:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    return Index.open(settings, purpose="pytest")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus ingested once; each test prunes a copy of the closed data folder."""
    data = tmp_path_factory.mktemp("prune") / "data"
    with open_index(data) as index:
        assert PostPipeline(index, batch_size=40).ingest(POSTS).new == N
    return data


def copy_of(filled: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(filled, data)
    return data


def orphans(index: Index) -> list[str]:
    """Ids one part of the index holds and another lacks: store ↔ docstore ↔ catalog."""
    stored = {c.doc_id for c in index.store.scroll(fields=["doc_id"])}
    docstore = set(index.post_ids())
    catalog = {ids.doc_id(CHANNEL_ID, m) for m in index.catalog.post_ids(CHANNEL_ID)}
    return sorted((stored ^ docstore) | (docstore ^ catalog))


def assert_pruned(index: Index) -> None:
    assert orphans(index) == []
    assert sorted(index.catalog.post_ids(CHANNEL_ID)) == list(range(EXPIRED + 1, N + 1))
    pipeline = PostPipeline(index)
    for p in POSTS[EXPIRED:]:
        assert actual_points(index, p.doc_id) == expected_points(pipeline, p), p.doc_id
        assert index.docstore.get_document_hash(p.doc_id) == p.to_document().hash
    assert index.store.count() == sum(len(expected_points(pipeline, p)) for p in POSTS[EXPIRED:])


def assert_resumable(index: Index) -> int:
    """After a kill: every post is whole, or gone, or still listed (catalog) as expired so the
    rerun finds it; what was kept is untouched.  Returns the expired posts still listed."""
    kept = {p.doc_id for p in POSTS[EXPIRED:]}
    catalog = {ids.doc_id(CHANNEL_ID, m) for m in index.catalog.post_ids(CHANNEL_ID)}
    stored = {c.doc_id for c in index.store.scroll(fields=["doc_id"])}
    docstore = set(index.post_ids())
    assert kept <= catalog & stored & docstore
    # Anything half-deleted (in the docstore or the store but not both) is still in the catalog.
    assert (stored ^ docstore) <= catalog
    return len(catalog - kept)


@pytest.mark.parametrize("die", ["after-store:2", "in-docstore:3", "before-catalog:2", "random"])
def test_sigkill_mid_prune_then_rerun(filled: Path, tmp_path: Path, die: str) -> None:
    data = copy_of(filled, tmp_path)
    if die == "random":
        child = PruneChild(data, "--batch", "5")
        line = child.wait_line(lambda s: s.startswith("deleted ") and int(s.split()[1]) >= 20)
        assert line, child.lines
        time.sleep(random.uniform(0.0, 0.2))
        child.kill()
    else:
        child = PruneChild(data, "--batch", "20", "--die", die)
        child.finish()
    assert child.proc.returncode == -signal.SIGKILL, (child.lines, getattr(child, "stderr", ""))
    assert "finished" not in child.lines and "planned 100" in child.lines

    with open_index(data) as index:
        left = assert_resumable(index)
        # A random kill can land after the last deletion but before "finished" (a fast machine
        # deletes the other 80 posts within the 0.2 s): nothing left is then a right answer too.
        assert 0 <= left < EXPIRED if die == "random" else 0 < left < EXPIRED
        if die != "random":
            assert orphans(index) != []  # really killed mid-batch: a half-deleted batch
    rerun = PruneChild(data, "--batch", "20")
    assert rerun.finish() == 0, (rerun.lines, rerun.stderr)
    assert f"planned {left}" in rerun.lines
    with open_index(data) as index:
        assert_pruned(index)


def test_prune_deletes_exactly_the_expired_posts(filled: Path, tmp_path: Path) -> None:
    """The baseline: an uninterrupted prune."""
    data = copy_of(filled, tmp_path)
    child = PruneChild(data, "--batch", "30")
    assert child.finish() == 0, (child.lines, child.stderr)
    assert child.lines[-1] == "finished" and "deleted 100" in child.lines
    with open_index(data) as index:
        assert_pruned(index)
