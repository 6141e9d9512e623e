"""``chatd simulate``: the estimate measured on simulated days through the real desk
(docs/waits.md#the-simulator). A short scenario with fixed seeds holds the bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatd.cli import main


def test_the_compressed_day_meets_the_bars_and_beats_the_old_formula(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.json"
    assert main(["simulate", "compressed-day", "--seeds", "5", "--check",
                 "--json", str(out)]) == 0
    [day] = json.loads(out.read_text())
    assert day["failures"] == []
    new, old = day["at_join"]["new"], day["at_join"]["old"]
    assert day["customers"] >= 300  # five days of about 70 measured customers
    assert new["error"] <= 0.35 and 0.9 <= new["bias"] <= 1.1 and new["coverage"] >= 0.8
    # The formula chatd had told customers about twice their real wait.
    assert old["bias"] > 1.5 and old["error"] > 2 * new["error"]
    for bucket in day["buckets"].values():
        b = bucket["new"]
        if b["customers"]:
            assert b["median_error"] <= 1.3 * b["floor"]
    printed = capsys.readouterr().out
    assert "compressed day" in printed and "bars: met" in printed


def test_a_scenario_that_cannot_run_is_refused_with_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('duration_seconds = 100\n[arrivals]\nper_hour = [[0, "many"]]\n')
    assert main(["simulate", str(bad)]) == 2
    assert "arrivals.per_hour[0] must be [seconds, per hour >= 0]" in capsys.readouterr().err

    assert main(["simulate", "no-such-day"]) == 2
    assert "no scenario 'no-such-day'" in capsys.readouterr().err

    bad.write_text("duration_seconds = 100\n[arrivals]\nper_hour = [[0, 10]]\n")
    assert main(["simulate", str(bad)]) == 2
    assert "[[engineers]]" in capsys.readouterr().err
