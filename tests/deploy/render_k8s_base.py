"""Write the kustomize base and components in k8s/ from the Helm chart.

Run ``.venv/bin/python -m tests.deploy.render_k8s_base`` after changing the chart. The
chart is the single source of the manifests; this renders it with the values below and
rewrites what Helm-specific parts cannot work without Helm:

- Helm labels and the checksum annotations go. The shared settings and the gateway's
  nginx.conf become configMapGenerator inputs, whose hashed names roll the pods when
  they change, as the checksums do under Helm.
- The migration Job loses its hook annotations and gets ttlSecondsAfterFinished, so a
  finished Job deletes itself and the next ``kubectl apply`` creates it anew.

tests/deploy/test_kustomize.py fails when the files in k8s/ differ from what this writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import K8S_DIR, chart_objects

GENERATED_HEADER = (
    "# Generated from charts/noctis by `python -m tests.deploy.render_k8s_base`.\n"
    "# Edit the chart, or patch in an overlay, instead of this file.\n"
)
SECRET_NAME = "noctis-secrets"
MIGRATION_JOB_TTL_S = 600

BASE_VALUES: dict[str, Any] = {
    "secrets": {"existingSecret": SECRET_NAME},
    "ingress": {"enabled": True, "host": "pacs.example.org"},
}
AUTOSCALING_COMPONENTS = ("ingestScp", "qido", "wado", "stow", "events", "authService", "gateway")
COMPONENT_VALUES: dict[str, dict[str, Any]] = {
    "autoscaling": {key: {"autoscaling": {"enabled": True}} for key in AUTOSCALING_COMPONENTS},
    "backup": {"backup": {"enabled": True, "existingClaim": "noctis-backup"}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}
# Kinds each component takes from its rendering; the rest is already in the base.
COMPONENT_KINDS = {
    "autoscaling": {"HorizontalPodAutoscaler"},
    "backup": {"CronJob"},
    "monitoring": {"ServiceMonitor", "PrometheusRule"},
}
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def strip_helm(document: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``document`` without Helm labels, hook and checksum annotations."""
    document = copy.deepcopy(document)
    for metadata in _metadata_blocks(document):
        labels = metadata.get("labels", {})
        for label in HELM_ONLY_LABELS:
            labels.pop(label, None)
        annotations = metadata.get("annotations", {})
        for annotation in list(annotations):
            if annotation.startswith(("checksum/", "helm.sh/")):
                del annotations[annotation]
        if "annotations" in metadata and not annotations:
            del metadata["annotations"]
    return document


def _metadata_blocks(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the object's metadata and that of its pod template, at any depth."""
    blocks = [document.get("metadata", {})]
    spec = document.get("spec", {})
    for template in (
        spec.get("template"),
        spec.get("jobTemplate", {}).get("spec", {}).get("template"),
    ):
        if template:
            blocks.append(template.setdefault("metadata", {}))
    return blocks


def component_of(document: dict[str, Any]) -> str:
    labels = document["metadata"].get("labels", {})
    return str(labels.get("app.kubernetes.io/component") or "common")


def dump(documents: list[dict[str, Any]]) -> str:
    return GENERATED_HEADER + "---\n".join(
        yaml.safe_dump(document, sort_keys=False, width=100) for document in documents
    )


def render_base() -> dict[Path, str]:
    """Return the files of k8s/base, relative to it, and their contents."""
    files: dict[Path, str] = {}
    by_component: dict[str, list[dict[str, Any]]] = {}
    settings: dict[str, str] = {}
    nginx_conf = ""
    for document in chart_objects(BASE_VALUES):
        name = document["metadata"]["name"]
        if document["kind"] == "ConfigMap" and name == "noctis-config":
            settings = document["data"]
            continue
        if document["kind"] == "ConfigMap" and name == "noctis-gateway":
            nginx_conf = document["data"]["nginx.conf"]
            continue
        document = strip_helm(document)
        if document["kind"] == "Job":
            document["spec"]["ttlSecondsAfterFinished"] = MIGRATION_JOB_TTL_S
        by_component.setdefault(component_of(document), []).append(document)

    for component, documents in sorted(by_component.items()):
        files[Path(f"{component}.yaml")] = dump(documents)
    files[Path("settings.env")] = GENERATED_HEADER + "".join(
        f"{name}={value}\n" for name, value in sorted(settings.items())
    )
    files[Path("nginx.conf")] = GENERATED_HEADER + nginx_conf
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "kustomize"}}],
        "resources": [f"{component}.yaml" for component in sorted(by_component)],
        "configMapGenerator": [
            {"name": "noctis-config", "envs": ["settings.env"]},
            {"name": "noctis-gateway", "files": ["nginx.conf"]},
        ],
    }
    files[Path("kustomization.yaml")] = dump([kustomization])
    return files


def render_component(component: str) -> dict[Path, str]:
    """Return the files of k8s/components/<component>: its objects and a Component."""
    documents = [
        strip_helm(document)
        for document in chart_objects({**BASE_VALUES, **COMPONENT_VALUES[component]})
        if document["kind"] in COMPONENT_KINDS[component]
    ]
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": [f"{component}.yaml"],
    }
    if component == "autoscaling":
        # The HorizontalPodAutoscalers own the replica counts; a replicas field in the
        # Deployments would reset them on every `kubectl apply`.
        kustomization["patches"] = [
            {
                "target": {
                    "kind": "Deployment",
                    "labelSelector": "app.kubernetes.io/part-of=noctis",
                },
                "patch": "- op: remove\n  path: /spec/replicas\n",
            }
        ]
    return {
        Path(f"{component}.yaml"): dump(documents),
        Path("kustomization.yaml"): dump([kustomization]),
    }


def render_all() -> dict[Path, str]:
    """Return every generated file, relative to k8s/."""
    files = {Path("base") / path: text for path, text in render_base().items()}
    for component in COMPONENT_VALUES:
        for path, text in render_component(component).items():
            files[Path("components") / component / path] = text
    return files


def main() -> None:
    for path, text in render_all().items():
        target = K8S_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(K8S_DIR.parent)}")


if __name__ == "__main__":
    main()
