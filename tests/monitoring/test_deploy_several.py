"""The metrics, the rules and the dashboard agree on which families are the desk's and how
each aggregates over several processes (docs/monitoring.md#several-processes)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from chatd.core.clock import FakeClock
from chatd.core.desk import Desk
from chatd.metrics import DESK_FAMILIES, Metrics
from chatd.store.sqlite import SQLiteStore
from tests.monitoring.test_deploy import DASHBOARD, METRIC, ROOT, RULES, promtool, rule_exprs

DOC = ROOT / "docs" / "monitoring.md"
NAME = re.compile(r"`((?:chatd|process|python)_[a-z0-9_*]+)`")


def families(store: SQLiteStore, clock: FakeClock, *, leading: bool) -> dict[str, str]:
    """The families /metrics shows (name -> type) on a process leading the desk or not."""
    metrics = Metrics()
    desk = Desk(store, clock)
    metrics.watch(desk.live, lambda: {}, target=300, warning=240)
    metrics.watch_store(lambda: (0, 0))
    metrics.watch_accept(lambda: (0, 0))
    metrics.watch_leading(lambda: leading)
    return {f.name: f.type
            for f in text_string_to_metric_families(metrics.render().decode())}


def documented() -> dict[str, str]:
    """The table of docs/monitoring.md#several-processes: family -> "desk" or "process"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### Several processes", 1)[1].split("\n#", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for name in NAME.findall(cells[0]):
            table[name.removesuffix("_total")] = cells[1]
    return table


def test_the_documented_table_is_what_metrics_exports(
    store: SQLiteStore, clock: FakeClock
) -> None:
    table = documented()
    assert {n for n, of in table.items() if of == "desk"} == DESK_FAMILIES
    assert set(table.values()) == {"desk", "process"}
    everything = families(store, clock, leading=True)
    chatd = {n for n in everything if n.startswith("chatd_")}
    assert chatd == {n for n in table if n.startswith("chatd_")}
    assert {"process_*", "python_info"} <= set(table)


def test_a_process_not_running_the_desk_leaves_out_exactly_the_desks_families(
    store: SQLiteStore, clock: FakeClock
) -> None:
    leader = families(store, clock, leading=True)
    other = families(store, clock, leading=False)
    assert set(leader) - set(other) == DESK_FAMILIES
    assert set(other) <= set(leader)
    assert other["chatd_desk_leader"] == "gauge"


def desk_gauges(store: SQLiteStore, clock: FakeClock) -> set[str]:
    kinds = families(store, clock, leading=True)
    return {n for n in DESK_FAMILIES if kinds.get(n, "gauge") == "gauge"}


def test_the_dashboard_never_sums_the_desks_gauges(store: SQLiteStore, clock: FakeClock) -> None:
    gauges = desk_gauges(store, clock)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    seen = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(METRIC.findall(expr)) & gauges
            seen |= names
            if names:  # one value per desk, even while two processes claim it
                assert expr.startswith("max without(instance) ("), (panel["title"], expr)
            if "chatd_connected_clients" in expr:
                assert expr.startswith("sum without(instance) ("), expr
    assert {"chatd_queue_length", "chatd_queue_oldest_wait_seconds", "chatd_engineers",
            "chatd_handoff_pending"} <= seen
    assert any("chatd_desk_leader" in t["expr"] for p in dashboard["panels"]
               for t in p["targets"])


def test_the_alerts_read_the_desks_gauges_once_per_desk(
    store: SQLiteStore, clock: FakeClock
) -> None:
    gauges = desk_gauges(store, clock)
    for expr in rule_exprs():
        names = set(METRIC.findall(expr)) & gauges
        if names:  # only the recordings read them, and always over every instance
            assert len(names) == 1, expr
            [name] = names
            assert f"(last_over_time({name}[1m]))" in expr, expr
            assert expr.strip().startswith("max without(instance) ("), expr
    text = RULES.read_text(encoding="utf-8")
    assert "{{ $labels.instance }}" not in text.split("alert: ChatdDown")[0]


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for panel in dashboard["panels"]:
        for i, target in enumerate(panel["targets"]):
            expr = target["expr"].replace("$__rate_interval", "5m")
            lines += [f"      - record: panel_{panel['id']}_{i}",
                      f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
