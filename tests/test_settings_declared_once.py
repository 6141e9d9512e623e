"""Settings are declared once, in ``chatd.config.Settings`` (type, default, parser with its
bounds, where it goes): the settings of the desk and the transport are derived from it,
and docs/configuration.md must say the same. These tests fail when they drift apart."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from chatd.app import desk_settings
from chatd.config import Bounded, Settings, derive
from chatd.core.desk import DeskSettings
from chatd.web.transport import TransportLimits

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(\w+)` \| `(CHATD_\w+)` \|([^|]+)\|([^|]*)\|([^|]*)\|", re.M)
SIZES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def documented() -> dict[str, dict[str, str]]:
    rows = {}
    for name, env, kind, default, allowed in ROW.findall(DOC.read_text()):
        assert name not in rows, f"{name} is documented twice"
        rows[name] = {"env": env, "kind": kind.strip(), "default": default.strip(),
                      "allowed": allowed.strip()}
    return rows


def number(text: str) -> float:
    """'86400', '1 GiB', '64 KiB', '0.01' as a number."""
    m = re.fullmatch(r"([\d.]+)\s*([KMGT]?i?B)?", text.strip())
    assert m, f"not a number: {text!r}"
    return float(m.group(1)) * SIZES.get(m.group(2) or "B", 1)


def test_every_setting_is_documented_with_its_variable_and_nothing_else_is() -> None:
    rows = documented()
    declared = {f.name for f in dataclasses.fields(Settings)}
    assert set(rows) == declared, (
        f"documented only: {sorted(set(rows) - declared)}; "
        f"declared only: {sorted(declared - set(rows))}"
    )
    for name, row in rows.items():
        assert row["env"] == f"CHATD_{name.upper()}", name


def test_documented_defaults_are_the_declared_ones() -> None:
    rows = documented()
    for f in dataclasses.fields(Settings):
        default: Any = f.default
        doc = rows[f.name]["default"]
        first = re.search(r"`([^`]*)`", doc)
        if default in ("", ()):
            assert doc.startswith("empty"), f"{f.name}: {doc!r} for an empty default"
        elif isinstance(default, bool):
            assert first and first.group(1) == str(default).lower(), f.name
        elif isinstance(default, tuple):
            assert first and first.group(1) == ",".join(default), f.name
        elif isinstance(default, int | float):
            assert first, f.name
            shown = first.group(1)
            parsed = f.metadata["parse"](shown)  # sizes like 25MiB read as the parser does
            assert parsed == default, f"{f.name}: documented {shown}, declared {default}"
        else:
            assert first and first.group(1) == default, f"{f.name}: {doc!r} vs {default!r}"


def test_documented_ranges_are_the_parsers_bounds() -> None:
    rows = documented()
    checked = 0
    for f in dataclasses.fields(Settings):
        parse = f.metadata["parse"]
        if not isinstance(parse, Bounded):
            continue
        m = re.match(r"([\d.]+(?:\s*[KMGT]?i?B)?)\s*–\s*([\d.]+(?:\s*[KMGT]?i?B)?)",
                     rows[f.name]["allowed"])
        assert m, f"{f.name}: no 'low – high' range in {rows[f.name]['allowed']!r}"
        assert (number(m.group(1)), number(m.group(2))) == (parse.low, parse.high), f.name
        checked += 1
    assert checked > 40


# Defaults a derived dataclass keeps on purpose: a desk made directly (in the core's tests,
# in the simulator) hands transcripts to no backend unless told; chatd serve's default is
# the file backend.
OWN_DEFAULTS: dict[type[Any], dict[str, Any]] = {DeskSettings: {"handoff_backends": ()}}


# Fields that are not settings: fixed in the code, documented where they act.
FIXED: dict[type[Any], set[str]] = {
    DeskSettings: {"handle_history", "position_interval", "queue_update_interval",
                   "history_limit", "history_max_chars"},
}


@pytest.mark.parametrize("cls", [DeskSettings, TransportLimits])
def test_derived_settings_take_every_field_from_the_declaration(cls: type[Any]) -> None:
    # The defaults of the derived dataclasses (there for tests and the simulator) are the
    # declared ones, and a Settings with every value changed reaches every field.
    via = "desk" if cls is DeskSettings else None
    derived = derive(Settings(), cls, via=via, **OWN_DEFAULTS.get(cls, {}))
    assert derived == cls(), f"{cls.__name__}'s defaults differ from Settings'"
    fields = {f.name for f in dataclasses.fields(cls)}
    sources = {
        (f.metadata.get("desk") if cls is DeskSettings else f.name): f.name
        for f in dataclasses.fields(Settings)
    }
    assert fields - set(sources) == FIXED.get(cls, set()), "a field neither declared nor fixed"


def test_the_desk_gets_the_configured_values() -> None:
    s = dataclasses.replace(Settings(), grace_seconds=7.0, wait_target_seconds=99.0,
                            resume_token_ttl_seconds=5.0, handoff_backends=("rt",))
    d = desk_settings(s)
    assert (d.grace, d.wait_target, d.resume_token_ttl, d.handoff_backends) == (
        7.0, 99.0, 5.0, ("rt",))
