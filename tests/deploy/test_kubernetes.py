"""deploy/kubernetes: the manifests validate against Kubernetes' schemas and wire the service as documented.

Core kinds are validated strictly by kubernetes-validate; KEDA's kinds (CRDs it has no schema
for) are checked by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helpers.vectors import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.34.0"
KEDA = "keda.sh/v1alpha1"
ADMIN_PORT = 9000
JOB_TIMEOUT_DEFAULT = 600


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization() -> dict[str, Any]:
    return documents(KUBERNETES / "kustomization.yaml")[0]


def resources() -> list[dict[str, Any]]:
    """Every object kustomization.yaml applies."""
    return [doc for name in kustomization()["resources"] for doc in documents(KUBERNETES / name)]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def receiver() -> dict[str, Any]:
    return find("Deployment", "kayle-webhooks-receiver")


def worker() -> dict[str, Any]:
    return find("Deployment", "kayle-webhooks-worker")


def config() -> dict[str, str]:
    data = find("ConfigMap", "kayle-webhooks")["data"]
    assert all(isinstance(value, str) for value in data.values())
    return data


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in (receiver(), worker()):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's KAYLE_* settings: the ConfigMap it loads, then its own env."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "kayle-webhooks"
        values.update(config())
    values.update({item["name"]: item["value"] for item in container.get("env", [])})
    return values


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def secret_mounts(deployment: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mount path -> the Secret volume mounted there."""
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    return {
        mount["mountPath"]: volumes[mount["name"]]["secret"]
        for mount in container["volumeMounts"]
        if "secret" in volumes[mount["name"]]
    }


def test_every_manifest_is_listed_in_the_kustomization() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.y*ml")} - {"kustomization.yaml"}
    examples = {name for name in on_disk if ".example." in name}
    assert examples == {"secret.example.yaml"}
    assert listed == on_disk - examples
    assert kustomization()["kind"] == "Kustomization"


def test_core_kinds_validate_strictly_against_the_kubernetes_schemas() -> None:
    checked = set()
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in documents(path):
            if doc["apiVersion"] == KEDA or doc["kind"] == "Kustomization":
                continue
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            checked.add(doc["kind"])
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Secret"} <= checked


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = receiver()
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_receiver_serves_port_8000_and_is_probed_and_scraped_on_the_admin_port() -> None:
    (container,) = receiver()["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kayle-webhooks", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert port_number(container, "http") == 8000
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz" and port_number(container, liveness["port"]) == ADMIN_PORT
    assert readiness["path"] == "/readyz" and port_number(container, readiness["port"]) == ADMIN_PORT
    assert environment(container)["KAYLE_ADMIN_HOST"] == "0.0.0.0"
    annotations = receiver()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ADMIN_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_service_publishes_the_public_port_only() -> None:
    service = find("Service", "kayle-webhooks-receiver")
    assert [(port["name"], port["port"]) for port in service["spec"]["ports"]] == [("http", 8000)]
    assert service["spec"]["selector"] == receiver()["spec"]["selector"]["matchLabels"]


def test_a_worker_has_time_to_finish_its_job_and_is_checked_by_worker_alive() -> None:
    spec = worker()["spec"]["template"]["spec"]
    timeout = int(config().get("KAYLE_JOB_TIMEOUT_SECONDS", JOB_TIMEOUT_DEFAULT))
    assert spec["terminationGracePeriodSeconds"] >= max(timeout, JOB_TIMEOUT_DEFAULT)
    (container,) = spec["containers"]
    assert container["command"] == ["kayle-webhooks", "worker"]
    assert container["livenessProbe"]["exec"]["command"] == ["kayle-webhooks", "worker-alive"]
    assert "ports" not in container and "readinessProbe" not in container


def test_pods_run_as_the_image_s_non_root_user_with_a_read_only_root_and_no_capabilities() -> None:
    for deployment, container in containers():
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001
        assert pod["fsGroup"] == 10001  # the 0400 secret files are readable through the group
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]


def test_secrets_are_mounted_files_read_only_mode_0400() -> None:
    for deployment, container in containers():
        settings = environment(container)
        mounts = secret_mounts(deployment, container)
        assert all(secret["defaultMode"] == 0o400 for secret in mounts.values())
        assert mounts[settings["KAYLE_KEY_DIR"]]["secretName"] == "kayle-webhooks-keys"
        files = {"KAYLE_REDIS_PASSWORD_FILE": "kayle-webhooks-redis"}
        if deployment["metadata"]["name"] == receiver()["metadata"]["name"]:
            files["KAYLE_SIGNING_SECRETS_FILE"] = "kayle-webhooks-signing-secrets"
        for variable, secret_name in files.items():
            directory, _, _ = settings[variable].rpartition("/")
            assert mounts[directory]["secretName"] == secret_name, variable
        assert not any(name in settings for name in ("KAYLE_SIGNING_SECRETS", "KAYLE_API_KEY"))


def test_the_configuration_uses_redis_through_sentinel_with_a_replica() -> None:
    settings = config()
    url = re.fullmatch(r"redis\+sentinel://([^/@]+)/(\w+)/(\d+)", settings["KAYLE_REDIS_URL"])
    assert url, settings["KAYLE_REDIS_URL"]
    hosts = url.group(1).split(",")
    assert len(hosts) == 3 and all(host.endswith(":26379") for host in hosts)
    assert settings["KAYLE_REDIS_MIN_REPLICAS"] == "1"
    # Secrets only as files: no setting carries a password or a secret itself.
    for name, value in settings.items():
        if re.search(r"PASSWORD|SECRET|API_KEY", name):
            assert name.endswith("_FILE") and value.startswith("/run/secrets/"), name


def test_disruption_budgets_cover_receivers_and_workers() -> None:
    budgets = [doc for doc in resources() if doc["kind"] == "PodDisruptionBudget"]
    selected = [budget["spec"]["selector"]["matchLabels"] for budget in budgets]
    for deployment in (receiver(), worker()):
        assert deployment["spec"]["selector"]["matchLabels"] in selected
    receiver_budget = budgets[selected.index(receiver()["spec"]["selector"]["matchLabels"])]
    assert receiver_budget["spec"].get("minAvailable", 0) >= 1


def test_keda_scales_the_workers_on_queued_events_and_scheduled_retries() -> None:
    (scaled,) = [doc for doc in resources() if doc["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == KEDA
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == worker()["metadata"]["name"]
    assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    assert spec["minReplicaCount"] >= 1  # RQ's scheduler, which fires the retries, runs in the workers
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    assert set(triggers) == {"redis-sentinel", "prometheus"}

    redis = triggers["redis-sentinel"]["metadata"]
    assert redis["listName"] == f"rq:queue:{config().get('KAYLE_QUEUE', 'kayle')}"
    assert int(redis["listLength"]) > 0
    url = re.fullmatch(r"redis\+sentinel://([^/@]+)/(\w+)/(\d+)", config()["KAYLE_REDIS_URL"])
    assert url
    assert redis["addresses"].split(",") == url.group(1).split(",")
    assert redis["sentinelMaster"] == url.group(2) and redis["databaseIndex"] == url.group(3)
    authentication = triggers["redis-sentinel"]["authenticationRef"]["name"]
    (auth,) = [doc for doc in resources() if doc["kind"] == "TriggerAuthentication"]
    assert auth["apiVersion"] == KEDA and auth["metadata"]["name"] == authentication
    (reference,) = auth["spec"]["secretTargetRef"]
    assert reference == {"parameter": "password", "name": "kayle-webhooks-redis", "key": "password"}

    prometheus = triggers["prometheus"]["metadata"]
    assert prometheus["query"].startswith("max(kayle_scheduled_retries")
    assert prometheus["serverAddress"].startswith("http") and float(prometheus["threshold"]) > 0


def test_no_secret_value_is_in_the_manifests() -> None:
    assert not [doc for doc in resources() if doc["kind"] == "Secret"]
    examples = documents(KUBERNETES / "secret.example.yaml")
    assert {doc["metadata"]["name"] for doc in examples} == {
        "kayle-webhooks-signing-secrets",
        "kayle-webhooks-keys",
        "kayle-webhooks-redis",
    }
    for doc in examples:
        assert doc["kind"] == "Secret" and "data" not in doc
        for value in doc["stringData"].values():
            assert value.strip().startswith("REPLACE_WITH_"), doc["metadata"]["name"]
    for path in (REPO / "deploy").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"whsec_[A-Za-z0-9_-]{8,}", text), path
            assert "PRIVATE KEY-----" not in text, path
