"""docker-compose.yml (server mode) stays in step with the settings it passes."""

from __future__ import annotations

import yaml

from rag.settings import Settings
from tests.conftest import REPO


def test_compose_has_server_mode_services_and_known_settings() -> None:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    services = spec["services"]
    assert {"qdrant", "redis", "api", "worker", "bot"} <= set(services)
    assert services["bot"]["command"] == ["tgrag", "bot"]
    # one process answers the bot: only its service gets the token
    assert [n for n, s in services.items() if "TGRAG_TG_BOT_TOKEN" in s.get("environment", {})
            ] == ["bot"]
    fields = set(Settings.model_fields)
    for name in ("api", "worker", "bot"):
        env = services[name]["environment"]
        assert env["TGRAG_QDRANT_URL"].startswith("http://qdrant:")
        assert env["TGRAG_REDIS_URL"].startswith("redis://redis:")
        for key in env:
            assert key.startswith("TGRAG_"), key
            assert key.removeprefix("TGRAG_").lower() in fields, f"{key} is not a Settings field"
