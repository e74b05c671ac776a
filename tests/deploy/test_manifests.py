"""The deployment files agree with the image and with each other.

Every Kubernetes manifest under deploy/ validates (kubernetes-validate, strict) against the
oldest and the newest Kubernetes we claim; the probes use the paths the app serves and the
port the image exposes; the migration Job runs the Deployment's image; docker-compose.yml
serves on the port it publishes and mounts the key as a secret.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml


def _repository_root() -> Path:
    """Where pyproject.toml is: this file works from deploy/ and from tests/ alike."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise RuntimeError(f"no pyproject.toml above {here}")


ROOT = _repository_root()
DEPLOY = ROOT / "deploy"
MANIFEST_FILES = sorted(DEPLOY.rglob("*.yaml"))
OLDEST_KUBERNETES = "1.29.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = [
    (path, doc) for path in MANIFEST_FILES for doc in _documents(path)
]  # every resource, with the file it came from


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/, found {len(found)}"
    return found[0]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def _instruction(word: str) -> str:
    found = [rest for name, rest in _dockerfile() if name == word]
    assert len(found) == 1, f"expected one {word} in the Dockerfile, found {found}"
    return found[0]


def _image_env() -> dict[str, str]:
    pairs = [pair for name, rest in _dockerfile() if name == "ENV" for pair in rest.split()]
    return dict(pair.split("=", 1) for pair in pairs)


def _image_port() -> int:
    return int(_instruction("EXPOSE").split("/")[0])


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _server_container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_manifests() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"Deployment", "Job", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
@pytest.mark.parametrize(
    ("path", "resource"),
    MANIFESTS,
    ids=[f"{p.relative_to(DEPLOY)}:{d['kind']}/{d['metadata']['name']}" for p, d in MANIFESTS],
)
def test_manifest_validates(path: Path, resource: dict[str, Any], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{path.relative_to(ROOT)}: {where}: {exc.message}")


def test_every_resource_is_labelled_and_namespaced() -> None:
    for path, doc in MANIFESTS:
        metadata = doc["metadata"]
        assert metadata["labels"]["app.kubernetes.io/name"] == "trackhook", path
        if doc["kind"] != "Namespace":
            assert metadata["namespace"] == "trackhook", path


def test_server_listens_on_the_port_the_image_exposes() -> None:
    container = _server_container()
    port = _image_port()
    assert int(_option(container["command"], "--port")) == port
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]
    assert _image_env()["PORT"] == str(port)
    assert "--no-migrate" in container["command"], "migrations belong to the Job"


def test_probes_use_the_apps_health_paths_on_the_server_port() -> None:
    container = _server_container()
    probes = {name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (*probes.values(), container["startupProbe"]["httpGet"]):
        assert probe["port"] == "http"

    from app.main import create_app

    paths = create_app().openapi()["paths"]
    assert {"/readyz", "/healthz"} <= set(paths)


def test_image_healthcheck_is_the_probe_script_on_healthz() -> None:
    assert _instruction("HEALTHCHECK").endswith('CMD ["trackhook-healthcheck"]')
    copies = [rest.split() for name, rest in _dockerfile() if name == "COPY"]
    assert ["deploy/healthcheck.py", "/usr/local/bin/trackhook-healthcheck"] in copies
    healthcheck = _load_healthcheck()
    assert healthcheck.DEFAULT_PORT == _image_port()
    assert healthcheck.healthz_url("127.0.0.1", _image_port()).endswith(f":{_image_port()}/healthz")
    cmd = json.loads(_instruction("CMD"))
    assert '--port "$PORT"' in cmd[-1], "the default command serves on $PORT"


def test_service_and_budget_select_the_servers() -> None:
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _one("Service")["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert [port["targetPort"] for port in service["ports"]] == ["http"]
    budget = _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert budget.items() <= pod_labels.items()
    migrate_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["selector"].items() <= migrate_labels.items(), "no traffic to the Job"


def test_migration_job_runs_the_deployments_image_and_settings() -> None:
    job = _one("Job")["spec"]["template"]["spec"]
    (migrate,) = job["containers"]
    server = _server_container()
    assert migrate["command"] == ["trackhook", "migrate"]
    assert migrate["image"] == server["image"]
    assert migrate["envFrom"] == server["envFrom"]
    assert job["restartPolicy"] == "Never"


def test_pods_run_as_the_images_user_on_a_read_only_root() -> None:
    uid, _, gid = _instruction("USER").partition(":")
    for kind in ("Deployment", "Job"):
        pod = _one(kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(uid)
        assert pod["securityContext"]["runAsGroup"] == int(gid)
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            assert container["resources"]["requests"]["memory"]


def test_grace_period_covers_the_prestop_pause_and_the_drain() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _server_container()
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = int(_option(container["command"], "--graceful-timeout"))
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_no_key_material_in_any_manifest() -> None:
    for path, doc in MANIFESTS:
        assert "-----BEGIN" not in json.dumps(doc), f"{path}: keys never go into git"


def test_compose_serves_where_it_publishes_and_mounts_the_key_and_tokens_as_secrets() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["trackhook"]
    port = int(_option(service["command"], "--port"))
    (published,) = service["ports"]
    assert published.endswith(f":{port}")
    assert published.startswith("${TRACKHOOK_PUBLISH:-127.0.0.1:"), "loopback by default"
    # A bind mount of a missing file makes a directory in its place; a secret fails instead.
    assert "volumes" not in service
    files = {
        compose["secrets"][secret["source"]]["file"]: f"/run/secrets/{secret['target']}"
        for secret in service["secrets"]
    }
    environment = service["environment"]
    assert files["./var/dev-public.pem"] == environment["VIDEOSDK_PUBLIC_KEY_FILE"]
    # /v1 needs a token by default: without one the service refuses to start.
    assert files["./var/dev-api-token"] == environment["API_TOKENS_FILE"]
    assert "API_AUTH" not in environment and "API_TOKENS" not in environment
