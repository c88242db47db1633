"""The deployment files agree with the code and with each other.

No container engine runs here, so these read docker-compose.yml, infra/Dockerfile, the Kubernetes
manifests, the Grafana provisioning and the ClickHouse server config, and check what a deployment
would otherwise only find out at start: names of settings, wiring between services, healthchecks.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from finpulse.settings import Settings
from finpulse.streams.web import ExposedEndpointError, check_exposure, is_loopback

REPO = Path(__file__).resolve().parents[2]
ENV_PREFIX: str = Settings.model_config["env_prefix"]
SETTING_ENV_NAMES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
SETTING_NAME_PATTERN = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(ENV_PREFIX)}[A-Z0-9_]+")
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# What a user sets before `docker compose up`, as docker-compose.yml's header says: its required variables.
USER_ENVIRONMENT = {"FINPULSE_SQL_TOKEN": "0123456789abcdef0123456789abcdef"}
K8S_DIR = REPO / "infra" / "k8s"
DOCKERFILE = REPO / "infra" / "Dockerfile"


# --- readers ---------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


class MissingVariableError(Exception):
    """Compose refuses to start: a ``${VAR:?message}`` variable is not set."""


def interpolate(value: Any, environment: Mapping[str, str] = USER_ENVIRONMENT) -> str:
    """A compose value as Compose resolves it with only ``environment`` set."""
    text = str(value)
    unsupported = re.findall(r"\$\{[^}]*:?\+[^}]*\}", text)
    assert not unsupported, (
        f"only ${{VAR}}, ${{VAR-x}}, ${{VAR:-x}}, ${{VAR?x}}, ${{VAR:?x}} are modelled: {unsupported}"
    )

    def resolve(match: re.Match[str]) -> str:
        name, operator, argument = match["name"], match["op"] or "", match["arg"] or ""
        value = environment.get(name)
        unset = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("?") and unset:
            raise MissingVariableError(f"required variable {name} is missing a value: {argument}")
        return argument if unset and operator.endswith("-") else (value or "")

    return COMPOSE_VARIABLE.sub(resolve, text).replace("$$", "$")


def variables_in(value: Any) -> set[str]:
    return {m["name"] for m in COMPOSE_VARIABLE.finditer(str(value))}


def raw_env(service_name: str) -> dict[str, str]:
    environment = service(service_name).get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def env(service_name: str) -> dict[str, str]:
    return {key: interpolate(value) for key, value in raw_env(service_name).items()}


def bind_mounts(service_name: str) -> dict[str, Path]:
    """Container path -> repository path of the service's ./ bind mounts."""
    mounts = {}
    for volume in service(service_name).get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = REPO / source
    return mounts


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in logical.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [arguments for key, arguments in dockerfile_instructions() if key == keyword]


@cache
def k8s_documents() -> dict[str, dict[str, Any]]:
    """Kind -> manifest, for the files the kustomization lists."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    documents = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S_DIR / resource).read_text()):
            assert document["kind"] not in documents, f"one {document['kind']} expected"
            documents[document["kind"]] = document
    return documents


def worker_container() -> dict[str, Any]:
    return k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def read_xml(relative: str) -> ET.Element:
    return ET.parse(REPO / relative).getroot()  # noqa: S314 - the repository's own config, not input


@cache
def clickhouse_users() -> ET.Element:
    return read_xml("infra/clickhouse/users.d/finpulse.xml")


def clickhouse_user(name: str) -> ET.Element:
    user = clickhouse_users().find(f"users/{name}")
    assert user is not None, f"ClickHouse user {name!r} is not defined in users.d"
    return user


def clickhouse_profile_of(user: str) -> ET.Element:
    profile_name = clickhouse_user(user).findtext("profile")
    profile = clickhouse_users().find(f"profiles/{profile_name}")
    assert profile is not None, f"profile {profile_name!r} of user {user!r} is not defined"
    return profile


def password_env_of(user: str) -> str:
    password = clickhouse_user(user).find("password")
    assert password is not None and password.get("from_env"), f"{user}'s password must come from the env"
    return password.get("from_env")


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    parsed = {}
    for listener in value.split(","):
        name, _, address = listener.partition("://")
        host, _, port = address.rpartition(":")
        parsed[name] = (host, int(port))
    return parsed


def listens_on_all_interfaces(settings: Settings) -> bool:
    return ipaddress.ip_address(settings.worker_web_host).is_unspecified


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in SETTING_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- settings names --------------------------------------------------------------------------------


DEPLOY_FILES = [
    "docker-compose.yml",
    "infra/Dockerfile",
    *sorted(str(path.relative_to(REPO)) for path in K8S_DIR.glob("*.yaml")),
]


@pytest.mark.parametrize("path", DEPLOY_FILES)
def test_every_finpulse_variable_is_a_setting(path: str) -> None:
    names = set(SETTING_NAME_PATTERN.findall((REPO / path).read_text()))
    unknown = names - SETTING_ENV_NAMES
    assert not unknown, f"{path} sets {sorted(unknown)}, not fields of Settings: {sorted(SETTING_ENV_NAMES)}"


def test_compose_worker_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(env("worker"), monkeypatch)
    assert not settings.embedded_broker
    assert settings.clickhouse_dsn.startswith("http://")
    assert listens_on_all_interfaces(settings), "the worker's HTTP port must be reachable from outside"
    assert settings.sql_token.get_secret_value() == USER_ENVIRONMENT[f"{ENV_PREFIX}SQL_TOKEN"]
    check_exposure(settings)  # the worker starts: its SQL asks for the token


def test_compose_refuses_to_start_the_worker_without_an_sql_token() -> None:
    token = raw_env("worker")[f"{ENV_PREFIX}SQL_TOKEN"]
    for unset in ({}, {f"{ENV_PREFIX}SQL_TOKEN": ""}):
        with pytest.raises(MissingVariableError, match="openssl rand"):
            interpolate(token, environment=unset)
    assert "FINPULSE_SQL_TOKEN" in (REPO / "docker-compose.yml").read_text().split("name: finpulse")[0], (
        "the header of docker-compose.yml must say to set FINPULSE_SQL_TOKEN"
    )


def test_compose_publishes_the_worker_on_the_hosts_loopback_only() -> None:
    for mapping in service("worker")["ports"]:
        host_ip, _, _ = str(mapping).rpartition(":")[0].rpartition(":")
        assert host_ip and is_loopback(host_ip), f"worker port {mapping!r} is published beyond this host"


def test_k8s_worker_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    config = k8s_documents()["ConfigMap"]["data"]
    secret = k8s_documents()["Secret"]["stringData"]
    for name in ("CLICKHOUSE_DSN", "SQL_TOKEN"):
        assert f"{ENV_PREFIX}{name}" in secret and f"{ENV_PREFIX}{name}" not in config, name
    settings = settings_from({**config, **secret}, monkeypatch)
    assert not settings.embedded_broker
    assert listens_on_all_interfaces(settings)
    with pytest.raises(ExposedEndpointError):
        check_exposure(settings)  # as shipped, with the token left empty, a worker refuses to start
    settings = settings_from({**config, **secret, f"{ENV_PREFIX}SQL_TOKEN": "0123456789abcdef"}, monkeypatch)
    check_exposure(settings)


def test_the_image_holds_no_sql_token_and_so_refuses_to_serve_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    image_env = dict(word.split("=", 1) for arguments in dockerfile("ENV") for word in shlex.split(arguments))
    assert f"{ENV_PREFIX}SQL_TOKEN" not in image_env
    with pytest.raises(ExposedEndpointError):
        check_exposure(settings_from(image_env, monkeypatch))


# --- compose topology ------------------------------------------------------------------------------


def test_compose_has_the_production_services() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "worker", "grafana"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("kafka", "clickhouse", "grafana"):
        assert not services[name]["image"].endswith(":latest"), f"{name}: pin the image version"
    assert REPO / services["worker"]["build"]["dockerfile"] == DOCKERFILE


def test_worker_runs_finpulse_worker() -> None:
    assert json.loads(dockerfile("ENTRYPOINT")[-1]) == ["finpulse"]
    assert json.loads(dockerfile("CMD")[-1]) == ["worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "finpulse" in scripts
    assert "entrypoint" not in service("worker")
    assert service("worker")["command"] == ["worker"]
    assert worker_container()["args"] == ["worker"]


def test_every_service_has_a_healthcheck() -> None:
    for name, definition in compose()["services"].items():
        check = definition.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_services_wait_for_healthy_dependencies() -> None:
    assert service("worker")["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
    }
    assert service("grafana")["depends_on"]["clickhouse"] == {"condition": "service_healthy"}


def test_bind_mounts_exist() -> None:
    for name in compose()["services"]:
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name} mounts {source.relative_to(REPO)} at {target}: missing"


# --- Kafka (KRaft) ---------------------------------------------------------------------------------


def kafka_hostnames() -> set[str]:
    return {"kafka", service("kafka").get("hostname", "kafka")}


def test_broker_setting_is_kafkas_in_network_listener() -> None:
    kafka = env("kafka")
    host, _, port = env("worker")[f"{ENV_PREFIX}BROKER"].rpartition(":")
    assert host in kafka_hostnames(), f"the worker must reach Kafka by its service name, not {host!r}"
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    matching = [name for name, address in advertised.items() if address == (host, int(port))]
    assert matching, f"{host}:{port} is not one of Kafka's advertised listeners {advertised}"
    bound = listeners(kafka["KAFKA_LISTENERS"])
    assert bound[matching[0]][1] == int(port), "advertised and bound ports of the listener differ"
    assert matching[0] not in kafka["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")


def test_kraft_settings_are_consistent() -> None:
    kafka = env("kafka")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(kafka["KAFKA_LISTENERS"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert bound.keys() <= protocols.keys(), "every listener needs a security protocol"
    assert advertised.keys() <= bound.keys(), "an advertised listener must be bound"

    (controller,) = kafka["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    assert controller in bound and controller not in advertised
    (voter,) = kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    node_id, _, address = voter.partition("@")
    voter_host, _, voter_port = address.rpartition(":")
    assert int(node_id) == int(kafka["KAFKA_NODE_ID"]), "the only voter must be this node"
    assert voter_host in kafka_hostnames()
    assert int(voter_port) == bound[controller][1], "the voter must name the controller listener's port"

    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID is a base64 UUID"
    assert int(kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1, "one node holds one replica"
    mounted = {volume.split(":")[1] for volume in service("kafka")["volumes"]}
    assert kafka["KAFKA_LOG_DIRS"] in mounted, "Kafka's log dir must be on a volume"


# --- ClickHouse ------------------------------------------------------------------------------------


def test_worker_dsn_points_at_clickhouse_as_the_finpulse_user() -> None:
    raw_dsn = raw_env("worker")[f"{ENV_PREFIX}CLICKHOUSE_DSN"]
    dsn = urlsplit(interpolate(raw_dsn))
    assert dsn.scheme == "http" and dsn.hostname == "clickhouse" and dsn.port == 8123
    assert "clickhouse" in compose()["services"]
    assert "8123" in " ".join(service("clickhouse")["healthcheck"]["test"]), "healthcheck another port?"

    password_env = password_env_of(dsn.username)
    clickhouse_raw = raw_env("clickhouse")
    assert password_env in clickhouse_raw, f"ClickHouse does not receive {password_env}"
    assert variables_in(raw_dsn) == variables_in(clickhouse_raw[password_env]), (
        "the DSN's password and the server's must come from the same variable"
    )
    assert dsn.password == env("clickhouse")[password_env]

    database = dsn.path.strip("/")
    grants = [query.text for query in clickhouse_user(dsn.username).iterfind("grants/query")]
    assert f"GRANT ALL ON {database}.*" in grants, f"{dsn.username} must own the {database} database"


def test_dashboards_user_is_read_only_with_a_changeable_timeout() -> None:
    profile = clickhouse_profile_of("dashboards")
    assert profile.findtext("readonly") == "1"
    # The Grafana plugin sets max_execution_time on every query (grafana-clickhouse-datasource docs).
    assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None
    config = read_xml("infra/clickhouse/config.d/finpulse.xml")
    # changeable_in_readonly only takes effect with this server setting.
    assert config.findtext("access_control_improvements/settings_constraints_replace_previous") == "true"
    grants = [query.text for query in clickhouse_user("dashboards").iterfind("grants/query")]
    assert grants and all(grant.startswith("GRANT SELECT ") for grant in grants)


def test_clickhouse_config_is_mounted_into_the_server() -> None:
    mounts = bind_mounts("clickhouse")
    for folder in ("config.d", "users.d"):
        sources = [src for target, src in mounts.items() if f"/etc/clickhouse-server/{folder}/" in target]
        assert sources, f"nothing of infra/clickhouse/{folder} is mounted"
        assert all(source.parent == REPO / "infra" / "clickhouse" / folder for source in sources)


# --- the worker image and its health endpoint ------------------------------------------------------


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for prefix in prefixes
        for pattern in patterns
    )


def test_dockerfile_copies_paths_that_exist_and_are_in_the_build_context() -> None:
    copies = [arguments.split() for arguments in dockerfile("COPY")]
    assert copies, "the Dockerfile copies nothing"
    sources = [source for words in copies for source in [w for w in words if not w.startswith("--")][:-1]]
    assert "models/" in sources, "the model artifacts must be in the image"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_installs_what_pyproject_declares() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runs = " ".join(dockerfile("RUN"))
    torch_pin = next(dep for dep in project["dependencies"] if dep.startswith("torch"))
    assert f"--index-url https://download.pytorch.org/whl/cpu {torch_pin}" in runs
    extras = re.findall(r'pip install "\.\[(\w+)\]"', runs)
    assert extras == ["cpu"] and "cpu" in project["optional-dependencies"]
    assert dockerfile("FROM")[0].startswith("python:3.11-slim")


def test_image_runs_as_the_non_root_user_kubernetes_expects() -> None:
    users = dockerfile("USER")
    assert users and users[-1] not in {"root", "0"}
    uid = re.search(rf"useradd [^&]*--uid (\d+)[^&]* {users[-1]}\b", " ".join(dockerfile("RUN")))
    assert uid, f"the Dockerfile does not create {users[-1]} with a fixed uid"
    pod_security = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(uid[1]), "the pod runs as another uid than the image's user"


def test_health_endpoint_matches_the_worker_port() -> None:
    port = int(env("worker")[f"{ENV_PREFIX}WORKER_WEB_PORT"])
    health = f"127.0.0.1:{port}/health"
    assert health in " ".join(service("worker")["healthcheck"]["test"])
    assert health in " ".join(dockerfile("HEALTHCHECK"))
    assert str(port) in dockerfile("EXPOSE")
    assert any(str(mapping).endswith(f":{port}") for mapping in service("worker")["ports"])
    assert f"{ENV_PREFIX}WORKER_WEB_PORT={port}" in " ".join(dockerfile("ENV"))


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kustomization_lists_the_worker_manifests() -> None:
    documents = k8s_documents()
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service"} <= documents.keys()
    namespace = documents["Namespace"]["metadata"]["name"]
    assert yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["namespace"] == namespace
    for kind, document in documents.items():
        if kind != "Namespace":
            assert document["metadata"]["namespace"] == namespace, f"{kind} is in another namespace"


def test_deployment_reads_the_configmap_and_the_secret() -> None:
    documents = k8s_documents()
    sources = worker_container()["envFrom"]
    assert {"configMapRef": {"name": documents["ConfigMap"]["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": documents["Secret"]["metadata"]["name"]}} in sources


def test_probes_and_service_reach_the_health_endpoint() -> None:
    documents = k8s_documents()
    port = int(documents["ConfigMap"]["data"][f"{ENV_PREFIX}WORKER_WEB_PORT"])
    container = worker_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health", probe
        assert ports.get(check["port"], check["port"]) == port, f"{probe} checks another port"

    deployment = documents["Deployment"]["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= pod_labels.items()
    spec = documents["Service"]["spec"]
    assert spec["selector"].items() <= pod_labels.items(), "the Service selects no worker pod"
    (service_port,) = spec["ports"]
    assert ports.get(service_port["targetPort"], service_port["targetPort"]) == port


def test_the_workers_are_reachable_inside_the_cluster_only() -> None:
    assert k8s_documents()["Service"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not any(port.get("hostPort") for port in worker_container()["ports"])


def test_replicas_do_not_exceed_the_partitions() -> None:
    partitions = int(k8s_documents()["ConfigMap"]["data"][f"{ENV_PREFIX}TOPIC_PARTITIONS"])
    assert 1 <= k8s_documents()["Deployment"]["spec"]["replicas"] <= partitions


# --- Grafana ---------------------------------------------------------------------------------------


@cache
def grafana_provisioning(kind: str) -> list[dict[str, Any]]:
    folder = REPO / "infra" / "grafana" / "provisioning" / kind
    return [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]


def test_grafana_clickhouse_datasource_uses_the_read_only_user() -> None:
    (provisioning,) = grafana_provisioning("datasources")
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "grafana-clickhouse-datasource"
    assert datasource.get("uid"), "a provisioned data source needs a stable uid for dashboards"
    plugin = env("grafana")["GF_PLUGINS_PREINSTALL_SYNC"].split("@")[0]
    assert plugin == datasource["type"], "Grafana must install the plugin the data source needs"

    settings = datasource["jsonData"]
    assert settings["host"] == "clickhouse" and settings["protocol"] == "http" and settings["port"] == 8123
    user = settings["username"]
    assert clickhouse_profile_of(user).findtext("readonly") == "1", "Grafana must query as a read-only user"

    (password_variable,) = variables_in(datasource["secureJsonData"]["password"])
    grafana_raw = raw_env("grafana")
    assert password_variable in grafana_raw, f"Grafana does not receive {password_variable}"
    server_password = raw_env("clickhouse")[password_env_of(user)]
    assert variables_in(grafana_raw[password_variable]) == variables_in(server_password)
    assert env("grafana")[password_variable] == env("clickhouse")[password_env_of(user)]


def test_grafana_provisioning_is_mounted() -> None:
    mounts = bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == REPO / "infra" / "grafana" / "provisioning"


def test_grafana_dashboard_provider_reads_a_mounted_folder() -> None:
    (provisioning,) = grafana_provisioning("dashboards")
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    source = bind_mounts("grafana").get(provider["options"]["path"])
    assert source is not None, f"{provider['options']['path']} is not a mounted folder"
    assert source.is_dir() and source.is_relative_to(REPO / "infra" / "grafana")
