"""The Helm chart in charts/noctis: strict lint, rendering, schema validation of values and
of every rendered object, and the properties a PACS deployment relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from noctis_common.auth import Authenticator
from noctis_common.settings import Settings
from tests.deploy.dockerfiles import DOCKER_DIR, parse_dockerfile
from tests.deploy.manifests import (
    CHART_DIR,
    KUBERNETES_VERSIONS,
    chart_objects,
    object_name,
    render_chart_notes,
    validation_errors,
    with_required_values,
)

CI_VALUES_DIR = CHART_DIR / "ci"
VALUES_FILES = sorted(CI_VALUES_DIR.glob("*.yaml"))
# Images built from docker/<component>.Dockerfile are named noctis/<component>. The
# gateway runs nginx's image.
NOCTIS_IMAGE_PREFIX = "noctis/"
SHUTDOWN_TIMEOUT_SETTINGS = ("NOCTIS_HTTP_SHUTDOWN_TIMEOUT_S", "NOCTIS_DIMSE_SHUTDOWN_TIMEOUT_S")


def load_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return with_required_values({})
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


VALUES_SETS = [pytest.param(None, id="defaults")] + [
    pytest.param(path, id=path.stem) for path in VALUES_FILES
]


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    return chart_objects()


@pytest.fixture(scope="module")
def production_objects() -> list[dict[str, Any]]:
    return chart_objects(load_values(CI_VALUES_DIR / "production-values.yaml"))


def objects_of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in objects if document["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Return (object name, pod spec) of every Deployment, Job and CronJob."""
    specs = []
    for document in objects:
        if document["kind"] in ("Deployment", "Job"):
            specs.append((object_name(document), document["spec"]["template"]["spec"]))
        elif document["kind"] == "CronJob":
            template = document["spec"]["jobTemplate"]["spec"]["template"]
            specs.append((object_name(document), template["spec"]))
    return specs


def is_noctis_image(image: str) -> bool:
    repository = image.rsplit(":", 1)[0]
    return repository.split("/")[-2:-1] == ["noctis"]


def noctis_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        document
        for document in objects_of_kind(objects, "Deployment")
        if is_noctis_image(document["spec"]["template"]["spec"]["containers"][0]["image"])
    ]


def setting_names() -> set[str]:
    return {f"NOCTIS_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("values_file", VALUES_SETS)
def test_chart_lints_strictly(values_file: Path | None) -> None:
    for kube_version in KUBERNETES_VERSIONS:
        report = helm_python.lint(
            CHART_DIR, load_values(values_file), strict=True, kube_version=f"v{kube_version}"
        )
        # Severity 2 is a warning and 3 an error. Strict lint fails on both.
        findings = [message for message in report["messages"] if message["severity"] >= 2]
        assert findings == [], f"helm lint findings for Kubernetes {kube_version}"
        assert report["errors"] == []


@pytest.mark.parametrize("values_file", VALUES_SETS)
def test_rendered_objects_validate(values_file: Path | None) -> None:
    objects = chart_objects(load_values(values_file))
    errors = [error for document in objects for error in validation_errors(document)]
    assert errors == []


@pytest.mark.parametrize("values_file", VALUES_SETS)
def test_schema_accepts_example_values(values_file: Path | None) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(load_values(values_file))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qido": {"replicas": 0}}, "/qido/replicas"),
        ({"qido": {"replica": 2}}, "additional properties 'replica' not allowed"),
        ({"unknownTopLevelKey": True}, "additional properties 'unknownTopLevelKey'"),
        ({"ingestScp": {"aeTitle": "A_TITLE_OF_17_CHR"}}, "/ingestScp/aeTitle"),
        ({"ingestScp": {"metricsPort": 11112}}, "/ingestScp/metricsPort"),
        ({"ingestScp": {"service": {"type": "ExternalName"}}}, "/ingestScp/service/type"),
        ({"ingestScp": {"tls": {"enabled": True}}}, "/ingestScp/tls/secretName"),
        ({"ingestScp": {"peers": [{"ae_title": "WS01", "permissions": ["all"]}]}}, "/peers/0"),
        ({"storage": {"s3": {"endpoint": "s3.example.org/bucket"}}}, "/storage/s3/endpoint"),
        ({"storage": {"backend": "nfs"}}, "/storage/backend"),
        ({"kafka": {"bootstrapServers": "kafka.example.org"}}, "/kafka/bootstrapServers"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "/kafka/saslMechanism"),
        ({"auth": {"mode": "off"}}, "/auth/mode"),
        ({"auth": {"mode": "oidc"}}, "/auth/issuer"),
        ({"authService": {"enabled": False}}, "/auth/jwksUrl"),
        ({"config": {"LOG_LEVEL": "DEBUG"}}, "LOG_LEVEL"),
        ({"secrets": {"values": {"DATABASE_URL": "x"}}}, "DATABASE_URL"),
        ({"publicBaseUrl": "pacs.example.org/dicom-web"}, "/publicBaseUrl"),
        ({"publicBaseUrl": "https://pacs.example.org/dicom-web/"}, "/publicBaseUrl"),
        ({"logLevel": "VERBOSE"}, "/logLevel"),
        ({"wado": {"resources": {"limits": {"memory": "lots"}}}}, "/wado/resources"),
        ({"stow": {"terminationGracePeriodSeconds": 5}}, "/stow/terminationGracePeriodSeconds"),
        ({"qido": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50"}}}, "/qido"),
        ({"gateway": {"clientMaxBodySize": "2 GB"}}, "/gateway/clientMaxBodySize"),
        ({"ingress": {"host": "https://pacs.example.org"}}, "/ingress/host"),
        ({"backup": {"enabled": True}}, "/backup/existingClaim"),
        ({"serviceMonitor": {"enabled": True, "interval": "often"}}, "/serviceMonitor/interval"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with (
        helm_python.Chart.load(CHART_DIR) as chart,
        pytest.raises(helm_python.HelmValuesError) as raised,
    ):
        chart.validate_schema(values)
    assert message in str(raised.value)


def test_install_rejects_bad_values() -> None:
    # Rendering, as `helm install` does, applies the schema too.
    with pytest.raises(helm_python.HelmValuesError, match="/qido/replicas"):
        chart_objects({"qido": {"replicas": -1}})


def test_every_component_is_deployed(default_objects: list[dict[str, Any]]) -> None:
    deployments = {
        document["metadata"]["name"]
        for document in default_objects
        if document["kind"] == "Deployment"
    }
    expected = {
        f"noctis-{name}"
        for name in ("ingest-scp", "qido", "wado", "stow", "events", "auth", "gateway")
    }
    assert deployments == expected


def test_pods_run_hardened(production_objects: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(production_objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name
            assert "cpu" in container["resources"]["requests"], name


def test_writable_paths_are_volumes(production_objects: list[dict[str, Any]]) -> None:
    # The root filesystem is read-only: the spool (NOCTIS_DATA_DIR) and /tmp, where
    # multipart STOW-RS bodies and pg_dump write, must be volumes.
    config = objects_of_kind(production_objects, "ConfigMap")
    shared = next(
        document for document in config if document["metadata"]["name"] == "noctis-config"
    )
    assert shared["data"]["NOCTIS_DATA_DIR"] == "/var/lib/noctis"
    for document in noctis_deployments(production_objects):
        container = document["spec"]["template"]["spec"]["containers"][0]
        mount_paths = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"/var/lib/noctis", "/tmp"} <= mount_paths, object_name(document)


def test_noctis_pods_probe_health_endpoints(default_objects: list[dict[str, Any]]) -> None:
    for document in noctis_deployments(default_objects):
        container = document["spec"]["template"]["spec"]["containers"][0]
        port_names = {port["name"] for port in container["ports"]}
        probes = {
            probe: container[probe]["httpGet"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["path"] == "/health/live", object_name(document)
        assert probes["readinessProbe"]["path"] == "/health/ready", object_name(document)
        for probe in probes.values():
            assert probe["port"] in port_names, object_name(document)


def test_readiness_answers_within_probe_timeout(
    default_objects: list[dict[str, Any]],
) -> None:
    config = next(
        document
        for document in default_objects
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "noctis-config"
    )
    readiness_timeout_s = float(
        config["data"].get(
            "NOCTIS_READINESS_TIMEOUT_S", Settings.model_fields["readiness_timeout_s"].default
        )
    )
    for document in noctis_deployments(default_objects):
        container = document["spec"]["template"]["spec"]["containers"][0]
        probe_timeout_s = container["readinessProbe"]["timeoutSeconds"]
        assert readiness_timeout_s < probe_timeout_s, object_name(document)


def test_shutdown_timeouts_fit_grace_period(production_objects: list[dict[str, Any]]) -> None:
    for document in noctis_deployments(production_objects):
        spec = document["spec"]["template"]["spec"]
        container = spec["containers"][0]
        timeouts = [
            float(variable["value"])
            for variable in container["env"]
            if variable["name"] in SHUTDOWN_TIMEOUT_SETTINGS
        ]
        pause_s = 5  # the preStop sleep
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pause_s)]
        assert len(timeouts) == 1, object_name(document)
        assert timeouts[0] + pause_s < spec["terminationGracePeriodSeconds"], object_name(document)


def test_migration_job_is_install_hook(default_objects: list[dict[str, Any]]) -> None:
    (job,) = objects_of_kind(default_objects, "Job")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    container = job["spec"]["template"]["spec"]["containers"][0]
    tools_command = parse_dockerfile(DOCKER_DIR / "tools.Dockerfile").command
    assert sorted(hooks) == ["pre-install", "pre-upgrade"]
    assert container["command"] == tools_command
    assert container["image"].startswith(f"{NOCTIS_IMAGE_PREFIX}tools:")


def test_migration_job_reads_created_secret(default_objects: list[dict[str, Any]]) -> None:
    # On a first install the hook runs before the chart's Secret exists, so it reads a
    # hook Secret created just before it.
    (job,) = objects_of_kind(default_objects, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    database_url = next(v for v in container["env"] if v["name"] == "NOCTIS_DATABASE_URL")
    secret_name = database_url["valueFrom"]["secretKeyRef"]["name"]
    hook_secrets = [
        document
        for document in objects_of_kind(default_objects, "Secret")
        if document["metadata"]["name"] == secret_name
    ]
    assert len(hook_secrets) == 1
    annotations = hook_secrets[0]["metadata"]["annotations"]
    assert int(annotations["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_migration_job_reads_existing_secret(production_objects: list[dict[str, Any]]) -> None:
    (job,) = objects_of_kind(production_objects, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    database_url = next(v for v in container["env"] if v["name"] == "NOCTIS_DATABASE_URL")
    assert database_url["valueFrom"]["secretKeyRef"]["name"] == "noctis-secrets"
    assert objects_of_kind(production_objects, "Secret") == []


def test_components_fetch_token_keys(default_objects: list[dict[str, Any]]) -> None:
    services = {
        document["metadata"]["name"]: document
        for document in objects_of_kind(default_objects, "Service")
    }
    auth_port = services["noctis-auth"]["spec"]["ports"][0]["port"]
    for document in noctis_deployments(default_objects):
        container = document["spec"]["template"]["spec"]["containers"][0]
        environment = {v["name"]: v.get("value") for v in container["env"]}
        jwks_url = environment.get("NOCTIS_AUTH_JWKS_URL")
        if document["metadata"]["name"] in ("noctis-auth", "noctis-ingest-scp"):
            assert jwks_url is None, object_name(document)
        else:
            assert jwks_url == f"http://noctis-auth:{auth_port}/auth/jwks", object_name(document)


def test_token_service_reachable_by_components(default_objects: list[dict[str, Any]]) -> None:
    (policy,) = [
        document
        for document in objects_of_kind(default_objects, "NetworkPolicy")
        if document["metadata"]["name"] == "noctis-auth"
    ]
    peers = policy["spec"]["ingress"][0]["from"]
    release_pods = {"app.kubernetes.io/name": "noctis", "app.kubernetes.io/instance": "noctis"}
    assert {"podSelector": {"matchLabels": release_pods}} in peers


def test_default_secret_holds_no_values(default_objects: list[dict[str, Any]]) -> None:
    secrets = [
        document
        for document in objects_of_kind(default_objects, "Secret")
        if "helm.sh/hook" not in document["metadata"].get("annotations", {})
    ]
    assert len(secrets) == 1
    assert "stringData" not in secrets[0]
    assert "data" not in secrets[0]


def test_services_skip_migrations_at_start(default_objects: list[dict[str, Any]]) -> None:
    (config,) = [
        document
        for document in objects_of_kind(default_objects, "ConfigMap")
        if document["metadata"]["name"] == "noctis-config"
    ]
    assert config["data"]["NOCTIS_DB_MIGRATE_ON_START"] == "false"


@pytest.mark.parametrize("values_file", VALUES_SETS)
def test_chart_sets_only_known_settings(values_file: Path | None) -> None:
    objects = chart_objects(load_values(values_file))
    names: set[str] = set()
    for document in objects:
        if document["kind"] in ("ConfigMap", "Secret"):
            names |= set(document.get("data", {})) | set(document.get("stringData", {}))
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            names |= {variable["name"] for variable in container.get("env", [])}
    noctis_names = {name for name in names if name.startswith("NOCTIS_")}
    assert noctis_names - setting_names() == set()


@pytest.mark.parametrize("values_file", VALUES_SETS)
def test_chart_settings_parse(values_file: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each component's environment (shared ConfigMap, then its own env) must be valid
    # Settings, or the pods would exit at start.
    objects = chart_objects(load_values(values_file))
    (config,) = [
        document
        for document in objects_of_kind(objects, "ConfigMap")
        if document["metadata"]["name"] == "noctis-config"
    ]
    for document in noctis_deployments(objects):
        container = document["spec"]["template"]["spec"]["containers"][0]
        environment = dict(config["data"])
        environment.update({v["name"]: v["value"] for v in container["env"] if "value" in v})
        with monkeypatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            settings = Settings()
        if document["metadata"]["name"] not in ("noctis-auth", "noctis-ingest-scp"):
            # Each DICOMweb API checks at start that it can fetch the keys that verify
            # tokens. The token service has its keys in-process, and the DIMSE gateway
            # serves no API that takes tokens.
            Authenticator(settings).check_configuration()


def test_images_have_dockerfiles(production_objects: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(production_objects):
        for container in spec["containers"]:
            image = container["image"]
            if not is_noctis_image(image):
                continue
            component = image.rsplit(":", 1)[0].rsplit("/", 1)[1]
            assert (DOCKER_DIR / f"{component}.Dockerfile").is_file(), f"{name}: {image}"


def test_registry_prefixes_images(production_objects: list[dict[str, Any]]) -> None:
    images = {
        container["image"]
        for _, spec in pod_specs(production_objects)
        for container in spec["containers"]
        if is_noctis_image(container["image"])
    }
    assert images
    for image in images:
        assert image.startswith("registry.example.org/noctis/"), image
        assert image.endswith(":0.1.0"), image


def test_dimse_service_reaches_modalities(production_objects: list[dict[str, Any]]) -> None:
    services = {
        document["metadata"]["name"]: document
        for document in objects_of_kind(production_objects, "Service")
    }
    dimse = services["noctis-ingest-scp"]
    ports = {port["name"]: port for port in dimse["spec"]["ports"]}
    assert dimse["spec"]["type"] == "LoadBalancer"
    assert dimse["spec"]["externalTrafficPolicy"] == "Local"
    assert ports["dicom"]["port"] == 11112
    assert ports["dicom-tls"]["port"] == 2762
    assert "metrics" not in ports


def test_dimse_service_on_node_port() -> None:
    objects = chart_objects(load_values(CI_VALUES_DIR / "oidc-values.yaml"))
    (dimse,) = [
        document
        for document in objects_of_kind(objects, "Service")
        if document["metadata"]["name"] == "noctis-ingest-scp"
    ]
    assert dimse["spec"]["type"] == "NodePort"
    assert dimse["spec"]["ports"][0]["nodePort"] == 31112


def test_ingress_sends_everything_to_gateway(production_objects: list[dict[str, Any]]) -> None:
    (ingress,) = objects_of_kind(production_objects, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    paths = {path["path"]: path["backend"]["service"]["name"] for path in rule["http"]["paths"]}
    assert rule["host"] == "pacs.example.org"
    assert paths == {
        "/dicom-web": "noctis-gateway",
        "/wado": "noctis-gateway",
        "/audit": "noctis-gateway",
        "/auth": "noctis-gateway",
    }
    assert ingress["spec"]["tls"][0]["secretName"] == "pacs-example-org-tls"


def test_autoscaled_deployments_leave_replicas(production_objects: list[dict[str, Any]]) -> None:
    deployments = {
        document["metadata"]["name"]: document
        for document in objects_of_kind(production_objects, "Deployment")
    }
    autoscalers = objects_of_kind(production_objects, "HorizontalPodAutoscaler")
    assert len(autoscalers) == 5
    for autoscaler in autoscalers:
        target = autoscaler["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, object_name(autoscaler)
        assert "replicas" not in deployments[target]["spec"], target


@pytest.mark.parametrize("kind", ["PodDisruptionBudget", "NetworkPolicy"])
def test_selectors_match_pods(production_objects: list[dict[str, Any]], kind: str) -> None:
    pod_labels = [
        document["spec"]["template"]["metadata"]["labels"]
        for document in objects_of_kind(production_objects, "Deployment")
    ]
    for document in objects_of_kind(production_objects, kind):
        selector = document["spec"].get("selector") or document["spec"]["podSelector"]
        expected_labels = selector["matchLabels"].items()
        matched = any(expected_labels <= labels.items() for labels in pod_labels)
        assert matched, object_name(document)


def test_monitoring_resources_off_by_default(default_objects: list[dict[str, Any]]) -> None:
    api_versions = {document["apiVersion"] for document in default_objects}
    assert "monitoring.coreos.com/v1" not in api_versions


def test_service_monitor_scrapes_components(production_objects: list[dict[str, Any]]) -> None:
    (monitor,) = objects_of_kind(production_objects, "ServiceMonitor")
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    scraped = [
        document
        for document in objects_of_kind(production_objects, "Service")
        if document["metadata"]["labels"]["app.kubernetes.io/component"] in expression["values"]
    ]
    scraped_ports = {
        document["metadata"]["name"]: {port["name"] for port in document["spec"]["ports"]}
        for document in scraped
    }
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert endpoint_ports == {"http", "metrics"}
    assert "gateway" not in expression["values"]
    for name in ("qido", "wado", "stow", "events", "auth", "ingest-scp-metrics"):
        assert scraped_ports[f"noctis-{name}"] & endpoint_ports, name


def test_prometheus_rule_embeds_alerts(production_objects: list[dict[str, Any]]) -> None:
    (rule,) = objects_of_kind(production_objects, "PrometheusRule")
    alerts = yaml.safe_load((CHART_DIR / "alerts" / "noctis-alerts.yaml").read_text())
    assert rule["spec"] == alerts


def test_grafana_dashboard_config_map(production_objects: list[dict[str, Any]]) -> None:
    (dashboard,) = [
        document
        for document in objects_of_kind(production_objects, "ConfigMap")
        if document["metadata"]["name"] == "noctis-dashboard"
    ]
    text = (CHART_DIR / "dashboards" / "noctis-overview.json").read_text()
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["noctis-overview.json"] == text.rstrip("\n")


def test_backup_cron_job_runs_backup_module(production_objects: list[dict[str, Any]]) -> None:
    (cron_job,) = objects_of_kind(production_objects, "CronJob")
    pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    script = container["command"][2]
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    assert cron_job["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert 'python -m noctis_common.backup "$@"' in script
    assert 'set -- create "$target" --objects "$BACKUP_OBJECTS"' in script
    assert environment == {"BACKUP_DIR": "/backup", "BACKUP_OBJECTS": "copy", "BACKUP_KEEP": "7"}
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "noctis-backup"


def test_notes_name_base_url() -> None:
    notes = render_chart_notes(load_values(CI_VALUES_DIR / "production-values.yaml"))
    assert "https://pacs.example.org/dicom-web" in notes
    assert "WARNING" not in notes


def test_notes_warn_without_database() -> None:
    assert "NOCTIS_DATABASE_URL" in render_chart_notes()


def test_internal_auth_without_url_fails_to_render() -> None:
    with (
        helm_python.Chart.load(CHART_DIR) as chart,
        pytest.raises(helm_python.HelmError, match="set publicBaseUrl"),
    ):
        chart.render({}, name="noctis", namespace="pacs", is_install=True)


def test_ingress_host_sets_public_base_url() -> None:
    objects = chart_objects(
        {
            "ingress": {
                "enabled": True,
                "host": "pacs.example.org",
                "tls": {"enabled": True, "secretName": "pacs-tls"},
            }
        }
    )
    (config,) = [
        document
        for document in objects
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "noctis-config"
    ]

    assert config["data"]["NOCTIS_PUBLIC_BASE_URL"] == "https://pacs.example.org/dicom-web"
