"""Opening the embedded engine, and moving a data folder built with qdrant-client's local mode
into it — once, automatically, without re-embedding anything.

Before qdrant-edge, the embedded default was qdrant-client's local mode in ``data_dir/qdrant``.
When the embedded collection does not exist yet but local mode holds one of that name, the first
open copies every point — id, dense and sparse vectors, payload — into a new embedded collection,
with the collection's embedding model and dimension, then builds the search index (HNSW) so the
migrated index is as fast as one built fresh.  The copy is made in a side folder and renamed into
place only when complete: an interrupted migration leaves nothing half-done behind, and the next
open starts it again.  The Redis side (docstore, catalog, caches) is not touched: point ids and
payloads are the same, so it stays valid as it is.  The local-mode folder is left where it was
(tgrag no longer reads it; delete it once the migrated index has served you well).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rag.errors import BackendUnavailable, TgragError
from rag.settings import Settings
from rag.store.edge import ENGINE, EdgeStore, create_collection, read_meta

log = logging.getLogger("tgrag.store")
PAGE = 1024  # points read from local mode and written to the engine per step

Progress = Callable[[int, int], None]  # (points copied, points in all)


def local_mode_collections(path: Path) -> list[str]:
    """Collections a local-mode folder holds (read from its ``meta.json``, not opened)."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return sorted(meta.get("collections") or {})


def open_embedded(settings: Settings, model_name: str, dim: int,
                  progress: Progress | None = None) -> EdgeStore:
    """The embedded collection of the settings; migrated from local mode first when only local
    mode has it (see the module docstring)."""
    root, name = settings.edge_path, settings.collection
    if read_meta(root / name) is None and name in local_mode_collections(settings.qdrant_path):
        migrate_local_mode(settings.qdrant_path, root, name, progress=progress)
    return EdgeStore.open(root, name, model_name, dim)


def migrate_local_mode(local_path: Path, root: Path, collection: str, *,
                       progress: Progress | None = None, optimize: bool = True) -> int:
    """Copy ``collection`` from the local-mode folder into ``root/<collection>``; returns the
    number of points copied.  Vectors and payloads are copied as they are (nothing is embedded);
    the model and dimension travel with the collection's metadata."""
    from qdrant_client import models

    from rag.store.qdrant import open_local_client

    target = root / collection
    side = root / f".{collection}.migrating"
    if side.exists():  # an earlier migration that did not finish
        shutil.rmtree(side)
    started = time.monotonic()
    try:
        client = open_local_client(local_path)  # local mode reads every point here
    except TgragError:
        raise
    except Exception as exc:  # sqlite or pickle errors of a damaged folder
        raise _unreadable(local_path, exc) from exc
    try:
        info = client.get_collection(collection)
        meta = info.config.metadata or {}
        model_name, dim = meta.get("embedding_model"), meta.get("dim")
        if not isinstance(model_name, str) or not isinstance(dim, int):
            raise BackendUnavailable(
                f"the local-mode collection {collection!r} in {local_path} records no embedding "
                "model, so it cannot be moved into the embedded engine",
                hint="re-ingest into a fresh TGRAG_DATA_DIR")
        total = client.count(collection, exact=True).count
        log.warning("moving the local-mode index into the embedded engine (once; nothing is "
                    "re-embedded)", extra={"collection": collection, "points": total,
                                          "source": str(local_path), "target": str(target)})
        shard = create_collection(side, model_name, dim, {
            "migrated_from": str(local_path.resolve()), "migrated_points": total,
        })
        store = EdgeStore(side, collection, model_name, dim, shard=shard)
        copied, offset = 0, None
        try:
            while True:
                try:
                    records, offset = client.scroll(collection, limit=PAGE, offset=offset,
                                                    with_payload=True, with_vectors=True)
                except Exception as exc:  # a damaged point in local mode's storage
                    raise _unreadable(local_path, exc) from exc
                store.upsert_points([_point(r, models) for r in records])
                copied += len(records)
                if progress:
                    progress(copied, total)
                if offset is None:
                    break
            if store.count() != total:
                raise BackendUnavailable(
                    f"the migration copied {store.count()} points, local mode has {total}",
                    hint="nothing was changed; try again, or re-ingest into a fresh data folder")
            if optimize:
                log.warning("building the search index of the migrated collection",
                            extra={"collection": collection, "points": total})
                store.optimize()
        finally:
            store.close()
    finally:
        client.close()
    root.mkdir(parents=True, exist_ok=True)
    side.rename(target)
    log.warning("local-mode index moved into the embedded engine", extra={
        "collection": collection, "points": copied, "seconds": round(time.monotonic() - started, 1),
        "engine": ENGINE, "old_folder_unused": str(local_path)})
    return copied


def _unreadable(local_path: Path, exc: Exception) -> BackendUnavailable:
    return BackendUnavailable(
        f"cannot move the local-mode index in {local_path} into the embedded engine: "
        f"{type(exc).__name__}: {exc}",
        hint=f"nothing was changed; restore {local_path} from a backup, or move it away and "
        "re-ingest your exports")


def _point(record: Any, models: Any) -> Any:
    """A local-mode record as an engine point: the same id, vectors and payload."""
    import qdrant_edge as qe

    vector: dict[str, Any] = {}
    for name, value in (record.vector or {}).items():
        if isinstance(value, models.SparseVector):
            if value.indices:
                vector[name] = qe.SparseVector(list(value.indices), list(value.values))
        else:
            vector[name] = list(value)
    return qe.Point(str(record.id), vector, dict(record.payload or {}))


__all__ = ["local_mode_collections", "migrate_local_mode", "open_embedded"]
