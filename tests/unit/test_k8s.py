"""deploy/k8s cannot be applied here (no cluster), so every manifest is validated against the Kubernetes schema of a
pinned version with kubernetes-validate, and the commands, probes, ports and settings it names are checked against
the code."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.routes import ROUTES
from services.config import Settings
from tests.conftest import ROOT
from tests.unit.test_deploy import DOCKER_TARGETS, _check_command

K8S_VERSION = "1.33.0"  # the oldest minor still supported upstream when this was written
BASE = ROOT / "deploy" / "k8s" / "base"
KUSTOMIZATION = yaml.safe_load((BASE / "kustomization.yaml").read_text())
DOCS: list[tuple[str, dict[str, Any]]] = [
    (name, doc) for name in KUSTOMIZATION["resources"] for doc in yaml.safe_load_all((BASE / name).read_text()) if doc
]
BY_KIND: dict[str, list[dict[str, Any]]] = {}
for _, _doc in DOCS:
    BY_KIND.setdefault(_doc["kind"], []).append(_doc)
SETTINGS = {f"KILN_{name.upper()}" for name in Settings.model_fields}
IMAGES = {"kiln-api": "api", "kiln-worker": "worker"}  # image name -> the Dockerfile target it is built from


def _named(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in BY_KIND[kind] if d["metadata"]["name"] == name)


def _containers() -> list[dict[str, Any]]:
    found = []
    for doc in BY_KIND["Deployment"] + BY_KIND["Job"]:
        found += doc["spec"]["template"]["spec"]["containers"]
    return found


def test_the_kustomization_lists_every_manifest_once() -> None:
    listed = KUSTOMIZATION["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert len(set(listed)) == len(listed)
    assert {image["name"] for image in KUSTOMIZATION["images"]} == set(IMAGES)


@pytest.mark.parametrize(("name", "doc"), [(n, d) for n, d in DOCS if d["kind"] != "ServiceMonitor"], ids=lambda v: str(v)[:40])
def test_every_manifest_is_valid_for_the_pinned_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises, naming the field, on any unknown or wrong one


def test_a_broken_manifest_is_refused() -> None:
    """The validator can fail: a misspelt field and a wrong type are both caught."""
    deployment = yaml.safe_load((BASE / "api-deployment.yaml").read_text())
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = yaml.safe_load((BASE / "api-deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_every_expected_object_is_there() -> None:
    assert {d["metadata"]["name"] for d in BY_KIND["Deployment"]} == {"kiln-api", "kiln-worker", "kiln-worker-gpu"}
    assert [d["metadata"]["name"] for d in BY_KIND["Job"]] == ["kiln-migrate"]
    assert BY_KIND["HorizontalPodAutoscaler"][0]["spec"]["scaleTargetRef"]["name"] == "kiln-api"
    assert {d["metadata"]["name"] for d in BY_KIND["PodDisruptionBudget"]} == {"kiln-api", "kiln-worker"}
    assert {"ConfigMap", "Secret", "Service", "PersistentVolumeClaim", "ServiceMonitor"} <= set(BY_KIND)


@pytest.mark.parametrize("container", _containers(), ids=lambda c: c["name"])
def test_every_container_runs_code_that_exists_from_an_image_the_dockerfile_builds(container: dict[str, Any]) -> None:
    _check_command(container["command"])
    probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
    if probe:
        _check_command(probe)
    assert IMAGES[container["image"]] in DOCKER_TARGETS


def test_every_setting_named_is_one_kiln_reads() -> None:
    named = set(_named("ConfigMap", "kiln-config")["data"]) | set(_named("Secret", "kiln-secrets")["stringData"])
    for container in _containers():
        named |= {e["name"] for e in container.get("env", [])}
        assert [ref for ref in container["envFrom"]] == [{"configMapRef": {"name": "kiln-config"}}, {"secretRef": {"name": "kiln-secrets"}}]
    assert named - SETTINGS == set(), "not a Kiln setting (services/config.py)"
    assert "KILN_DATABASE_URL" in _named("Secret", "kiln-secrets")["stringData"]  # the credentials stay out of the ConfigMap


def test_the_api_is_probed_on_its_own_routes_and_ports() -> None:
    api = _named("Deployment", "kiln-api")["spec"]["template"]["spec"]["containers"][0]
    public = {spec.path for spec in ROUTES if spec.scopes is None and spec.method == "GET"}
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" and api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", "/metrics"} <= public  # the probes and the scrape need no key
    config = _named("ConfigMap", "kiln-config")["data"]
    assert api["ports"] == [{"name": "http", "containerPort": int(config["KILN_PORT"])}] and config["KILN_HOST"] == "0.0.0.0"
    worker = _named("Deployment", "kiln-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": int(config["KILN_WORKER_METRICS_PORT"])}]


def test_the_gpu_worker_asks_for_a_gpu_and_tolerates_gpu_nodes() -> None:
    pod = _named("Deployment", "kiln-worker-gpu")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_selectors_find_their_pods_and_the_service_monitor_finds_every_metrics_port() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in BY_KIND["Deployment"]}
    for deployment in BY_KIND["Deployment"]:
        assert _matches(deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    for budget in BY_KIND["PodDisruptionBudget"]:
        assert [n for n, labels in pods.items() if _matches(budget["spec"]["selector"], labels)], budget
    ports: set[str] = set()
    for service in BY_KIND["Service"]:
        selected = [n for n, labels in pods.items() if _matches({"matchLabels": service["spec"]["selector"]}, labels)]
        assert selected, service
        named = {p["name"] for n in selected for c in _named("Deployment", n)["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named
        ports |= {p["name"] for p in service["spec"]["ports"]}
    monitor = BY_KIND["ServiceMonitor"][0]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    watched = [s for s in BY_KIND["Service"] if _matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in watched} == {"kiln-api", "kiln-worker-metrics"}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == ports and all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_the_shared_volume_is_read_write_many() -> None:
    claim = _named("PersistentVolumeClaim", "kiln-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the API and every worker mount it (until S3 lands)
    for deployment in BY_KIND["Deployment"]:
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": "kiln-data"}}]


def test_the_readme_points_at_the_manifests() -> None:
    assert "deploy/k8s" in (ROOT / "README.md").read_text()
