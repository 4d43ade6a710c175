"""The Grafana dashboard and the Prometheus alert rules in charts/noctis: every metric
they query exists, and the rules have what Alertmanager routes and shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import CHART_DIR
from tests.support import REPOSITORY_ROOT

DASHBOARD = CHART_DIR / "dashboards" / "noctis-overview.json"
ALERTS = CHART_DIR / "alerts" / "noctis-alerts.yaml"
METRICS_DOC = REPOSITORY_ROOT / "docs" / "metrics.md"
CODE_FOLDERS = (REPOSITORY_ROOT / "libs", REPOSITORY_ROOT / "services")

# Series that are not Noctis's own: Prometheus's scrape health, and the process
# collector that prometheus_client registers by default (docs/metrics.md names it).
FOREIGN_METRICS = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
SEVERITIES = {"critical", "warning"}


def metric_names(expression: str) -> set[str]:
    """Return the metric names a PromQL expression selects.

    Label matchers, range selectors, grouping clauses and strings are removed first. Of
    the words left, those followed by a parenthesis are functions. Every other word that
    is not a PromQL keyword is a metric name.
    """
    text = re.sub(r'"[^"]*"', "", expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group(0)
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def series_family(name: str) -> str:
    """Return the metric a series belongs to: a histogram's _bucket/_count/_sum removed."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def known_metrics() -> set[str]:
    """Return every noctis_* name in docs/metrics.md or in a string literal of the code."""
    names = set(re.findall(r"`(noctis_[a-z0-9_]+)`", METRICS_DOC.read_text()))
    for folder in CODE_FOLDERS:
        for path in folder.rglob("*.py"):
            names |= set(re.findall(r"[\"'](noctis_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            'sum by (route) (rate(noctis_http_requests_total{status=~"5.."}[5m]))',
            {"noctis_http_requests_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket[5m]))) > 2",
            {"a_seconds_bucket"},
        ),
        ("max(x) > 0 and sum(rate(y[15m])) == 0", {"x", "y"}),
        ('up{job=~".*noctis.*"} == 0', {"up"}),
    ],
)
def test_metric_names_parse(expression: str, expected: set[str]) -> None:
    assert metric_names(expression) == expected


def test_known_metrics_include_documented() -> None:
    names = known_metrics()
    assert "noctis_http_requests_total" in names
    assert "noctis_outbox_pending_events" in names


def test_dashboard_queries_existing_metrics(dashboard: dict[str, Any]) -> None:
    known = known_metrics() | FOREIGN_METRICS
    for title, expression in dashboard_expressions(dashboard):
        for name in metric_names(expression):
            assert series_family(name) in known, f"panel {title!r} queries unknown {name}"


def test_alerts_query_existing_metrics() -> None:
    known = known_metrics() | FOREIGN_METRICS
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            assert series_family(name) in known, f"alert {rule['alert']} queries unknown {name}"


def test_alerts_route_and_explain() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["alert"].startswith("Noctis"), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_dashboard_covers_issue_signals(dashboard: dict[str, Any]) -> None:
    # Request rate, errors and latency per endpoint; DIMSE associations, instances and
    # bytes stored, store latency; outbox depth and event lag; consumer lag; storage and
    # database errors.
    queried = {
        series_family(name)
        for _, expression in dashboard_expressions(dashboard)
        for name in metric_names(expression)
    }
    expected = {
        "noctis_http_requests_total",
        "noctis_http_request_duration_seconds",
        "noctis_dimse_associations_total",
        "noctis_dimse_active_associations",
        "noctis_store_instances_total",
        "noctis_stored_bytes_total",
        "noctis_store_duration_seconds",
        "noctis_outbox_pending_events",
        "noctis_outbox_oldest_pending_age_seconds",
        "noctis_consumer_lag_records",
        "noctis_storage_errors_total",
        "noctis_database_errors_total",
    }
    assert expected - queried == set()


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    datasource_uids = {
        panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel
    }
    assert dashboard["uid"] == "noctis-overview"
    assert len(ids) == len(set(ids))
    # Panels use the dashboard's data source variable, not a UID of one Grafana.
    assert datasource_uids == {"${datasource}"}
