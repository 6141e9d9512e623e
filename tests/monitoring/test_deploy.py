"""The Prometheus rules and the Grafana dashboard that ship in deploy/ are valid and use
only metrics chatd exports."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.metrics import Metrics
from chatd.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "chatd.json"
METRIC = re.compile(r"\b((?:chatd|process|python)_[a-z0-9_]+)\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make promtool` installs Debian's prometheus")
    return path


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "info": ("_info",)}


def exported_names(store: SQLiteStore, clock: FakeClock) -> set[str]:
    """Every series name chatd's registry can export, also of labelled metrics that have
    no sample yet (e.g. chatd_handoffs_total before the first delivery)."""
    metrics = Metrics()
    desk = Desk(store, clock)
    metrics.watch(desk.live, lambda: {}, target=300, warning=240)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    names = {s.name for f in families for s in f.samples}
    for f in families:
        names.update(f.name + suffix for suffix in SUFFIXES.get(f.type, ("",)))
    return names


def referenced(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def rule_exprs() -> list[str]:
    # The rules file is YAML; its expressions are the block scalars after "expr:".
    text = RULES.read_text(encoding="utf-8")
    exprs = []
    for block in re.split(r"\n\s*- (?:record|alert): ", text)[1:]:
        m = re.search(r"expr: (\|\n((?:\s{10,}.*\n?)+)|.*)", block)
        assert m, block
        exprs.append(m.group(2) or m.group(1))
    return exprs


def test_promtool_accepts_the_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 20 rules found" in out.stdout


def test_the_alerts_fire_as_their_unit_tests_expect() -> None:
    out = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], capture_output=True,
                         text=True, timeout=60, cwd=RULES_TEST.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_use_only_exported_metrics(store: SQLiteStore, clock: FakeClock) -> None:
    exprs = rule_exprs()
    assert len(exprs) == 20
    names = referenced(exprs)
    assert {"chatd_queue_wait_seconds_bucket", "chatd_queue_oldest_wait_seconds",
            "chatd_engineers", "chatd_handoff_pending"} <= names
    assert names - exported_names(store, clock) == set()
    assert 'up{job="chatd"}' in RULES.read_text(encoding="utf-8")


def test_the_dashboard_uses_only_exported_metrics(store: SQLiteStore, clock: FakeClock) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_names(store, clock)
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        names = referenced(exprs)
        assert names, f"panel {panel['title']!r} shows no chatd metric"
        assert names - exported == set(), panel["title"]
    assert {"chatd_queue_length", "chatd_queue_oldest_wait_seconds",
            "chatd_queue_wait_seconds_bucket"} <= referenced(
        [t["expr"] for p in dashboard["panels"] for t in p["targets"]])


def test_the_core_does_not_import_prometheus() -> None:
    for path in (ROOT / "chatd" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "prometheus_client" for n in names), path
