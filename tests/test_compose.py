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


def test_cluster_compose_runs_three_qdrant_nodes_safely() -> None:
    """docker-compose.cluster.yml: a 3-node Qdrant cluster (peer port never published, an API
    key on every node and in the app) and Redis, with sharding the settings accept."""
    spec = yaml.safe_load((REPO / "docker-compose.cluster.yml").read_text(encoding="utf-8"))
    services = spec["services"]
    nodes = sorted(name for name in services if name.startswith("qdrant"))
    assert nodes == ["qdrant-1", "qdrant-2", "qdrant-3"]
    assert {"redis", "api", "worker"} <= set(services)
    required_key = "${QDRANT_API_KEY:?"
    for name in nodes:
        node = services[name]
        env = node["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true", name
        assert str(env["QDRANT__SERVICE__API_KEY"]).startswith(required_key), name
        published = [str(p) for p in node.get("ports", [])]
        assert not any("6335" in p for p in published), (name, published)
        assert "qdrant" in node["networks"]["default"]["aliases"], name
        command = node["command"]
        assert command[command.index("--uri") + 1] == f"http://{name}:6335"
        if name != "qdrant-1":
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-1:6335"
    assert not any("6335" in str(p) for s in services.values() for p in s.get("ports", []))
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["TGRAG_QDRANT_URL"] == "http://qdrant:6333"
        assert str(env["TGRAG_QDRANT_API_KEY"]).startswith(required_key)
        assert env["TGRAG_REDIS_URL"].startswith("redis://redis:")
        for key in env:
            assert key.removeprefix("TGRAG_").lower() in fields, f"{key} is not a Settings field"
        settings = Settings(_env_file=None, **{  # type: ignore[call-arg]
            k.removeprefix("TGRAG_").lower(): v for k, v in env.items()
            if k.startswith("TGRAG_QDRANT_") and not k.endswith("API_KEY")})
        assert settings.qdrant_shard_number >= len(nodes)  # every node holds shards
        assert 2 <= settings.qdrant_replication_factor <= len(nodes)  # survives a node down
        assert settings.qdrant_write_consistency <= settings.qdrant_replication_factor
        assert set(services[name]["depends_on"]) >= {*nodes, "redis"}
