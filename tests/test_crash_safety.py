"""Killing an ingest (SIGKILL, in a subprocess) and re-running it loses no post and duplicates none.

The subprocess is ``tests/crash_ingest.py``.  After each kill the test checks that the kernel
released the data-folder lock, that Qdrant local mode reopens with every write the dead process
made, and after the re-run that every post has exactly its expected chunk points, its text in the
docstore, and nothing stale.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.documents import Post
from ingest.pipeline import PostPipeline
from rag.errors import DataDirLocked
from rag.ids import point_id
from rag.index import Index
from rag.settings import Settings
from tests.crash_ingest import LONG_EVERY, make_posts

HELPER = Path(__file__).resolve().parent / "crash_ingest.py"
REPO = HELPER.parent.parent

pytestmark = pytest.mark.slow


class Child:
    """A helper (the ingest by default) running in a subprocess, read line by line."""

    def __init__(self, data_dir: Path, *args: str, helper: Path = HELPER) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TGRAG_")}
        self.proc = subprocess.Popen(
            [sys.executable, str(helper), str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        self.lines: list[str] = []

    def wait_line(self, predicate, timeout: float = 240) -> str | None:  # type: ignore[no-untyped-def]
        """Read lines until one satisfies ``predicate``; None if the process ended first."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:
                return None
            self.lines.append(line.strip())
            if predicate(line.strip()):
                return line.strip()
        self.kill()
        raise AssertionError(f"helper timed out; output so far: {self.lines}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def finish(self) -> int:
        """Wait for the end; collect the rest of stdout into ``lines`` and stderr."""
        out, self.stderr = self.proc.communicate(timeout=240)
        self.lines += [s.strip() for s in out.splitlines()]
        return self.proc.returncode


def committed(line: str) -> int:
    return int(line.split()[1]) if line.startswith("committed ") else 0


def open_index(data_dir: Path) -> Index:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    return Index.open(settings, purpose="pytest")


def expected_points(pipeline: PostPipeline, p: Post) -> dict[str, str]:
    nodes = pipeline.splitter.get_nodes_from_documents([p.to_document()])
    return {point_id(n.node_id): n.text for n in nodes}


def actual_points(index: Index, doc_id: str) -> dict[str, str]:
    return {str(r.id): r.payload["text"] for r in index.store.chunks_of(doc_id)}


def assert_exactly(index: Index, posts: list[Post]) -> None:
    """Every post present once, with exactly its chunks and texts; nothing else in the index."""
    pipeline = PostPipeline(index)
    total = 0
    hashes = index.docstore.get_all_document_hashes()
    assert sorted(hashes.values()) == sorted(p.doc_id for p in posts)
    for p in posts:
        want = expected_points(pipeline, p)
        assert actual_points(index, p.doc_id) == want, p.doc_id
        assert index.docstore.get_document_hash(p.doc_id) == p.to_document().hash, p.doc_id
        stored = index.docstore.get_document(p.doc_id)
        assert stored is not None and stored.text == p.text, p.doc_id
        total += len(want)
    assert index.store.count() == total
    assert not index.redis.smembers(f"{index.namespace}:pending")
    channels = index.catalog.channels()
    assert [c.posts for c in channels] == [len(posts)]


def committed_posts_are_exact(index: Index, posts: list[Post]) -> int:
    """Posts the docstore says are committed have exactly their chunks; returns their number."""
    by_id = {p.doc_id: p for p in posts}
    pipeline = PostPipeline(index)
    ids = list(index.docstore.get_all_document_hashes().values())
    for doc_id in ids:
        p = by_id[doc_id]
        if index.docstore.get_document_hash(doc_id) == p.to_document().hash:
            assert actual_points(index, doc_id) == expected_points(pipeline, p), doc_id
    return len(ids)


def test_sigkill_mid_ingest_then_rerun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    posts = make_posts(300, 0)
    child = Child(data, "--n", "300", "--batch", "10")
    opened = child.wait_line(lambda s: s.startswith("opened "))
    assert opened, (child.lines, child.finish(), child.stderr)
    pid = int(opened.split()[1])

    # While the child runs, the data folder is locked and the error names the child.
    with pytest.raises(DataDirLocked) as err:
        open_index(data)
    assert str(pid) in str(err.value) and err.value.hint

    line = child.wait_line(lambda s: committed(s) >= 30)
    assert line, f"helper ended early: {child.lines}"
    time.sleep(random.uniform(0.0, 0.4))  # somewhere inside a later batch
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL
    assert "finished" not in child.lines

    # The kernel released the flock: the data folder opens again, Qdrant local recovers its storage.
    index = open_index(data)
    try:
        done = committed_posts_are_exact(index, posts)
        assert 30 <= done < 300, done
        report = PostPipeline(index, batch_size=50).ingest(posts)
        assert report.new + report.unchanged == 300
        assert report.unchanged >= done
        assert_exactly(index, posts)
    finally:
        index.close()


def test_qdrant_write_survives_kill_before_docstore_commit(tmp_path: Path) -> None:
    """Dies right after the 3rd Qdrant write: those points are on disk, the docstore lacks them."""
    data = tmp_path / "data"
    posts = make_posts(60, 0)
    child = Child(data, "--n", "60", "--batch", "10", "--die", "after-add:3")
    rc = child.finish()
    assert rc == -signal.SIGKILL, (rc, child.lines, child.stderr)
    assert "committed 20" in child.lines and "committed 30" not in child.lines

    index = open_index(data)
    try:
        assert sorted(index.docstore.get_all_document_hashes().values()) == sorted(
            p.doc_id for p in posts[:20])
        pipeline = PostPipeline(index)
        # Batch 3 (posts 21-30) reached Qdrant local's storage before the kill.
        for p in posts[20:30]:
            assert actual_points(index, p.doc_id) == expected_points(pipeline, p), p.doc_id
        for p in posts[30:]:
            assert actual_points(index, p.doc_id) == {}
        report = PostPipeline(index, batch_size=25).ingest(posts)
        assert (report.new, report.unchanged) == (40, 20)
        assert_exactly(index, posts)
    finally:
        index.close()


def test_sigkill_while_updating_then_rerun_or_revert(tmp_path: Path) -> None:
    n = 150
    data = tmp_path / "data"
    v0, v1 = make_posts(n, 0), make_posts(n, 1)
    edited = [p for p, q in zip(v0, v1, strict=True) if p.text != q.text]
    long_ids = [p.doc_id for p in v0 if p.message_id % LONG_EVERY == 7]
    assert len(long_ids) == 3 and len(edited) > 50

    index = open_index(data)
    try:
        PostPipeline(index, batch_size=50).ingest(v0)
        assert_exactly(index, v0)
        pipeline = PostPipeline(index)
        long_before = {d: actual_points(index, d) for d in long_ids}
        assert all(len(pts) >= 2 for pts in long_before.values())
    finally:
        index.close()

    # 1. Killed inside the write of batch 6 (posts 51-60, with long post 57 edited to short):
    #    new chunks upserted, old extra chunks not deleted yet, docstore not committed.
    child = Child(data, "--n", str(n), "--version", "1", "--batch", "10",
                  "--die", "before-delete:6")
    assert child.finish() == -signal.SIGKILL, (child.lines, child.stderr)
    assert "committed 50" in child.lines and "committed 60" not in child.lines
    index = open_index(data)
    try:
        p57 = next(p for p in v1 if p.message_id == 57)
        mid_write = actual_points(index, p57.doc_id)
        new_first = expected_points(pipeline, p57)
        assert set(new_first) < set(mid_write)  # the new chunk and stale old ones, for now
        # 2. The re-run brings the *old* texts back (an older export): the half-written and the
        #    written-but-uncommitted edits must be undone, not trusted because the hash matches.
        report = PostPipeline(index, batch_size=40).ingest(v0)
        assert report.updated >= 1
        assert_exactly(index, v0)
        assert {d: actual_points(index, d) for d in long_ids} == long_before
    finally:
        index.close()

    # 3. The edit run again, killed at a random moment after a few batches, then re-run.
    child = Child(data, "--n", str(n), "--version", "1", "--batch", "5")
    line = child.wait_line(lambda s: committed(s) >= 20)
    assert line, child.lines
    time.sleep(random.uniform(0.0, 0.3))
    child.kill()
    assert "finished" not in child.lines
    index = open_index(data)
    try:
        report = PostPipeline(index, batch_size=40).ingest(v1)
        assert report.new == 0 and report.updated + report.unchanged == n
        assert_exactly(index, v1)
        for d in long_ids:
            assert len(actual_points(index, d)) == 1
    finally:
        index.close()
