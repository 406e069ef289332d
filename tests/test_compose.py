"""docker-compose.yml (server mode) and the Dockerfile, checked where no Docker daemon runs.

Beyond "every variable is a setting": what ``docker compose up`` would do on a fresh host with
only the README's one step (the keys in ``.env``) is replayed here — the file's variables
interpolated the way compose does (``${VAR:?message}`` refuses to start), each service's
environment built from ``env_file`` and ``environment``, and the settings, the keys and the bind
check run on it as ``tgrag serve`` would run them in the container.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.security import check_bind, parse_api_keys
from rag.settings import Settings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
ONE_STEP_ENV = {"TGRAG_API_KEYS": "s3cr3t-key-for-ops", "TGRAG_QDRANT_API_KEY": "qdrant-s3cr3t"}
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


class Refused(Exception):
    """What ``docker compose`` prints when a required variable is unset."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (the forms this file uses)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        got = env.get(name)
        if op in (":?", "?") and not got:
            raise Refused(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and not got:
            return arg
        return got or ""

    return VARIABLE.sub(one, value)


def spec() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def default_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services a plain ``docker compose up`` starts (no profile)."""
    return {n: s for n, s in data["services"].items() if not s.get("profiles")}


def tgrag_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in data["services"].items() if "build" in s}


def container_env(service: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """The container's environment: the env_file (.env), then ``environment`` over it."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, str | dict) else files:
        path = entry["path"] if isinstance(entry, dict) else entry
        if path == ".env":
            env.update(dotenv)
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def test_compose_has_server_mode_services_and_known_settings() -> None:
    data = spec()
    services = data["services"]
    assert {"qdrant", "redis", "api", "worker"} <= set(services)
    fields = set(Settings.model_fields)
    for name, service in tgrag_services(data).items():
        env = service["environment"]
        assert env["TGRAG_QDRANT_URL"].startswith("http://qdrant:"), name
        assert env["TGRAG_REDIS_URL"].startswith("redis://redis:"), name
        for key in env:
            assert key.startswith("TGRAG_"), key
            assert key.removeprefix("TGRAG_").lower() in fields, f"{key} is not a Settings field"
    # Every TGRAG_ variable the file reads is a setting too.
    for name in VARIABLE.findall(COMPOSE.read_text(encoding="utf-8")):
        if name[0].startswith("TGRAG_"):
            assert name[0].removeprefix("TGRAG_").lower() in fields, name[0]


def test_qdrant_is_not_published_and_needs_its_key() -> None:
    """Qdrant on 0.0.0.0:6333 without a key bypassed every API key and tenant."""
    data = spec()
    qdrant = data["services"]["qdrant"]
    for port in qdrant.get("ports") or []:
        assert str(port).startswith("127.0.0.1:"), f"Qdrant published to the network: {port}"
    key = qdrant["environment"]["QDRANT__SERVICE__API_KEY"]
    assert key.startswith("${TGRAG_QDRANT_API_KEY:?"), key  # required: no start without it
    for name, service in tgrag_services(data).items():
        assert service["environment"]["TGRAG_QDRANT_API_KEY"].startswith(
            "${TGRAG_QDRANT_API_KEY"), name
    assert "ports" not in data["services"]["redis"]


def test_a_fresh_host_with_the_keys_in_env_starts() -> None:
    data = interpolate(spec(), ONE_STEP_ENV)  # raises Refused if anything else were required
    started = default_services(data)
    assert {"qdrant", "redis", "api"} <= set(started)
    for name, service in started.items():
        assert service.get("restart") in ("unless-stopped", "always"), name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    api = started["api"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert any(str(p).endswith(":8000") for p in api["ports"])
    for dep in ("qdrant", "redis"):
        assert api["depends_on"][dep]["condition"] == "service_healthy"
    for name, service in tgrag_services(data).items():
        env = container_env(service, ONE_STEP_ENV)
        assert env["TGRAG_API_KEYS"] == ONE_STEP_ENV["TGRAG_API_KEYS"], name  # all of .env
        settings = Settings(_env_file=None, **{k.removeprefix("TGRAG_").lower(): v  # type: ignore[arg-type]
                                               for k, v in env.items()})
        assert settings.qdrant_api_key is not None
        assert settings.qdrant_api_key.get_secret_value() == ONE_STEP_ENV["TGRAG_QDRANT_API_KEY"]
        if service["command"][:2] == ["tgrag", "serve"]:
            command = service["command"]
            host = command[command.index("--host") + 1]
            parse_api_keys(settings.api_keys)
            check_bind(settings, host)  # refused before: TGRAG_API_KEYS was empty
    # The worker needs Telegram credentials: it is opt-in, not part of a plain `up`.
    assert "worker" not in started
    assert data["services"]["worker"]["profiles"] == ["telegram"]


@pytest.mark.parametrize("missing", sorted(ONE_STEP_ENV))
def test_without_a_key_compose_refuses_to_start_saying_which(missing: str) -> None:
    env = {k: v for k, v in ONE_STEP_ENV.items() if k != missing}
    with pytest.raises(Refused, match=missing) as err:
        interpolate(spec(), env)
    assert ".env" in str(err.value)


def test_the_image_has_the_openai_extra_and_runs_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert re.search(r"\.\[[^\]]*openai", install), install
    assert re.search(r"^USER (?!root)\S+", dockerfile, flags=re.M), "the image runs as root"
    for package in ("rag", "ingest", "api", "eval"):
        assert f"COPY {package} {package}" in dockerfile, package


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("no docker compose plugin")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in ONE_STEP_ENV.items()))
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    result = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_bot_service_alone_answers_the_bot() -> None:
    """One process answers a bot token: the bot service keeps it; the api and the worker get it
    emptied (env_file hands them every .env line), and the bot uses no account session."""
    data = interpolate(spec(), ONE_STEP_ENV)
    services = data["services"]
    bot = services["bot"]
    assert bot["command"] == ["tgrag", "bot"] and bot["profiles"] == ["bot"]
    dotenv = {**ONE_STEP_ENV, "TGRAG_TG_BOT_TOKEN": "123:abc", "TGRAG_TG_SESSION": "1Bxyz"}
    envs = {name: container_env(s, dotenv) for name, s in tgrag_services(data).items()}
    assert [n for n, env in envs.items() if env.get("TGRAG_TG_BOT_TOKEN")] == ["bot"]
    assert not envs["bot"].get("TGRAG_TG_SESSION")
    assert any(str(v).endswith(":/data") for v in bot["volumes"])  # its session file survives


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
