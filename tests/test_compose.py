"""docker-compose.yml (server mode) stays in step with the settings it passes."""

from __future__ import annotations

import yaml

from rag.settings import Settings
from tests.conftest import REPO


def test_compose_has_server_mode_services_and_known_settings() -> None:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    services = spec["services"]
    assert {"qdrant", "redis", "api", "worker"} <= set(services)
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["TGRAG_QDRANT_URL"].startswith("http://qdrant:")
        assert env["TGRAG_REDIS_URL"].startswith("redis://redis:")
        for key in env:
            assert key.startswith("TGRAG_"), key
            assert key.removeprefix("TGRAG_").lower() in fields, f"{key} is not a Settings field"
