"""Settings from ``CHATD_*`` environment variables and an optional TOML file.

Every setting has one name: ``offer_timeout`` in the TOML file is ``CHATD_OFFER_TIMEOUT`` in
the environment, which wins. Values are validated at start; every bad value is reported
with its name, and nothing starts. The table of settings is docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import StoreURLError, check_url

MiB = 1024 * 1024
# The attachment types chatd can recognise from their bytes (chatd/files.py, docs/attachments.md).
UPLOAD_KINDS = ("png", "jpeg", "gif", "webp", "text", "gzip", "zip", "pdf")


# Never printed: masked in Settings.public() and in configuration errors.
# A Slack-style incoming webhook URL is itself a credential.
SECRETS = ("widget_secret", "handoff_webhook_secret", "handoff_rt_token", "handoff_rt_password",
           "metrics_token", "alert_webhook_url")
HANDOFF_BACKENDS = ("file", "webhook", "rt")


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///var/chatd.db"
    upload_dir: str = "uploads"
    widget_secret: str = field(default="", repr=False)
    allow_guests: bool = False
    allowed_origins: tuple[str, ...] = ()
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    offer_timeout: float = 30.0
    grace_seconds: float = 60.0
    wait_target_seconds: float = 300.0
    wait_warning_seconds: float = 240.0
    wait_objective: float = 0.9
    default_capacity: int = 3
    max_capacity: int = 20
    default_handle_seconds: float = 600.0
    token_ttl_seconds: float = 12 * 3600.0
    message_rate: float = 5.0
    message_burst: int = 20
    connect_rate: float = 2.0
    connect_burst: int = 30
    max_event_bytes: int = 64 * 1024
    # Bounds on what one client can hold or send (docs/security.md).
    event_rate: float = 20.0  # every event, per connection
    event_burst: int = 60
    send_queue_max_bytes: int = 1 * MiB  # queued for a client that does not read
    connections_per_address: int = 100
    handshake_rate: float = 5.0  # Engine.IO handshakes per client address
    handshake_burst: int = 20
    join_timeout_seconds: float = 10.0  # handshake to namespace connect
    # Server-wide budgets for the dearest work a crowd of addresses can ask for.
    handshake_rate_total: float = 200.0  # new Engine.IO sessions a second, all addresses
    history_rate_total: float = 100.0  # pages of history a second, all connections
    chat_max_messages: int = 5000
    resume_token_ttl_seconds: float = 86_400.0  # after the chat closes
    login_backoff_after: int = 5  # failed logins of one account before it backs off
    login_backoff_max_seconds: float = 900.0
    limiter_max_keys: int = 100_000
    password_hash_workers: int = 2
    log_level: str = "info"
    log_format: str = "text"
    demo: bool = False
    upload_max_bytes: int = 25 * MiB
    upload_session_max_count: int = 50
    upload_session_max_bytes: int = 200 * MiB
    upload_rate: float = 0.2
    upload_burst: int = 10
    upload_types: tuple[str, ...] = UPLOAD_KINDS
    upload_concurrent_per_session: int = 2
    upload_concurrent_per_customer: int = 4
    upload_concurrent_per_address: int = 16
    upload_idle_timeout_seconds: float = 30.0
    upload_total_timeout_seconds: float = 600.0
    upload_min_free_bytes: int = 1024 * MiB
    # Handoff to ticketing backends (docs/handoff.md).
    handoff_backends: tuple[str, ...] = ("file",)
    handoff_file_dir: str = ""  # empty: a "handoff" folder beside the SQLite database
    handoff_webhook_url: str = ""
    handoff_webhook_secret: str = field(default="", repr=False)
    handoff_rt_url: str = ""
    handoff_rt_queue: str = "General"
    handoff_rt_token: str = field(default="", repr=False)
    handoff_rt_user: str = ""
    handoff_rt_password: str = field(default="", repr=False)
    handoff_rt_custom_field: str = ""
    handoff_rt_attachment_budget: int = 5 * MiB
    handoff_retry_base_seconds: float = 10.0
    handoff_retry_max_seconds: float = 3600.0
    handoff_retry_horizon_seconds: float = 86_400.0
    handoff_attempt_timeout_seconds: float = 30.0
    # Monitoring (docs/monitoring.md).
    metrics_token: str = field(default="", repr=False)  # empty: /metrics answers loopback only
    alert_webhook_url: str = field(default="", repr=False)  # empty: no alert webhook

    def public(self) -> dict[str, Any]:
        """Settings safe to print: secrets are masked."""
        out = dataclasses.asdict(self)
        out["widget_secret"] = "***" if self.widget_secret else ""
        for key in SECRETS:
            out[key] = "***" if out[key] else ""
        return out


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _as_int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("must be a whole number")
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not lo <= n <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return n

    return parse


def _as_float(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        try:
            n = float(str(v).strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not lo <= n <= hi or n != n:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return n

    return parse


def _as_origins(v: Any) -> tuple[str, ...]:
    items = v if isinstance(v, list) else str(v).split(",")
    out = []
    for item in items:
        o = str(item).strip().rstrip("/")
        if not o:
            continue
        if o == "*":
            raise ValueError("'*' is not allowed: list each origin (https://host[:port])")
        if not (o.startswith("http://") or o.startswith("https://")) or "/" in o.split("//", 1)[1]:
            raise ValueError(f"{o!r} is not an origin like https://app.example.com")
        out.append(o)
    return tuple(out)


def _as_networks(v: Any) -> tuple[str, ...]:
    items = v if isinstance(v, list) else str(v).split(",")
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network like 10.0.0.0/8") from None
    return tuple(out)


def _as_choice(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = str(v).strip().lower()
        if s not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return s

    return parse


def _as_str(v: Any) -> str:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ValueError("must be text")
    return str(v)


def _as_size(lo: int, hi: int) -> Callable[[Any], int]:
    """Bytes, as a whole number or with a binary unit: 25MiB, 512KiB, 1GiB (K, M, G too)."""
    units = {"": 1, "k": 1024, "kib": 1024, "m": MiB, "mib": MiB, "g": 1024 * MiB,
             "gib": 1024 * MiB}

    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("must be a size in bytes, e.g. 26214400 or 25MiB")
        s = str(v).strip().lower().replace(" ", "")
        digits = s.rstrip("kmgib")
        unit = s[len(digits):]
        if not digits.isdigit() or unit not in units:
            raise ValueError("must be a size in bytes, e.g. 26214400 or 25MiB")
        n = int(digits) * units[unit]
        if not lo <= n <= hi:
            raise ValueError(f"must be between {lo} and {hi} bytes")
        return n

    return parse


def _as_upload_kinds(v: Any) -> tuple[str, ...]:
    items = v if isinstance(v, list) else str(v).split(",")
    out: list[str] = []
    for item in items:
        kind = str(item).strip().lower()
        if not kind:
            continue
        if kind not in UPLOAD_KINDS:
            raise ValueError(f"{kind!r} is not one of {', '.join(UPLOAD_KINDS)}")
        if kind not in out:
            out.append(kind)
    if not out:
        raise ValueError(f"name at least one of {', '.join(UPLOAD_KINDS)}")
    return tuple(out)


def _as_backends(v: Any) -> tuple[str, ...]:
    items = v if isinstance(v, list) else str(v).split(",")
    out: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in HANDOFF_BACKENDS:
            raise ValueError(f"{name!r} is not one of {', '.join(HANDOFF_BACKENDS)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def _as_http_url(v: Any) -> str:
    s = _as_str(v).strip()
    if s and not (s.startswith("http://") or s.startswith("https://")):
        raise ValueError("must be an http:// or https:// URL")
    return s


def _as_webhook_secret(v: Any) -> str:
    s = _as_str(v).strip()
    if s:
        from .handoff.webhook import secret_key

        secret_key(s)
    return s


def _as_db_url(v: Any) -> str:
    s = _as_str(v).strip()
    try:
        check_url(s)
    except StoreURLError as exc:
        raise ValueError(str(exc)) from None
    return s


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "host": _as_str,
    "port": _as_int(0, 65535),
    "database_url": _as_db_url,
    "upload_dir": _as_str,
    "widget_secret": _as_str,
    "allow_guests": _as_bool,
    "allowed_origins": _as_origins,
    "public_url": _as_str,
    "trusted_proxies": _as_networks,
    "offer_timeout": _as_float(1, 3600),
    "grace_seconds": _as_float(0, 86400),
    "wait_target_seconds": _as_float(1, 86400),
    "wait_warning_seconds": _as_float(1, 86400),
    "wait_objective": _as_float(0.01, 0.999),
    "default_capacity": _as_int(1, 100),
    "max_capacity": _as_int(1, 100),
    "default_handle_seconds": _as_float(1, 86400),
    "token_ttl_seconds": _as_float(60, 90 * 86400),
    "message_rate": _as_float(0.1, 10000),
    "message_burst": _as_int(1, 100000),
    "connect_rate": _as_float(0.1, 10000),
    "connect_burst": _as_int(1, 100000),
    "max_event_bytes": _as_int(1024, 16 * 1024 * 1024),
    "event_rate": _as_float(0.1, 10000),
    "event_burst": _as_int(1, 100000),
    "send_queue_max_bytes": _as_size(64 * 1024, 1024 * MiB),
    "connections_per_address": _as_int(1, 1_000_000),
    "handshake_rate": _as_float(0.1, 10000),
    "handshake_burst": _as_int(1, 100000),
    "join_timeout_seconds": _as_float(0.5, 3600),
    "handshake_rate_total": _as_float(1, 1_000_000),
    "history_rate_total": _as_float(1, 1_000_000),
    "chat_max_messages": _as_int(10, 10_000_000),
    "resume_token_ttl_seconds": _as_float(0, 365 * 86400),
    "login_backoff_after": _as_int(1, 1000),
    "login_backoff_max_seconds": _as_float(1, 86400),
    "limiter_max_keys": _as_int(100, 10_000_000),
    "password_hash_workers": _as_int(1, 64),
    "log_level": _as_choice("debug", "info", "warning", "error"),
    "log_format": _as_choice("text", "json"),
    "demo": _as_bool,
    "upload_max_bytes": _as_size(1, 64 * 1024 * MiB),
    "upload_session_max_count": _as_int(1, 100_000),
    "upload_session_max_bytes": _as_size(1, 1024 * 1024 * MiB),
    "upload_rate": _as_float(0.001, 10000),
    "upload_burst": _as_int(1, 100000),
    "upload_types": _as_upload_kinds,
    "upload_concurrent_per_session": _as_int(1, 1000),
    "upload_concurrent_per_customer": _as_int(1, 1000),
    "upload_concurrent_per_address": _as_int(1, 100_000),
    "upload_idle_timeout_seconds": _as_float(1, 3600),
    "upload_total_timeout_seconds": _as_float(1, 86400),
    "upload_min_free_bytes": _as_size(0, 1024 * 1024 * MiB),
    "handoff_backends": _as_backends,
    "handoff_file_dir": _as_str,
    "handoff_webhook_url": _as_http_url,
    "handoff_webhook_secret": _as_webhook_secret,
    "handoff_rt_url": _as_http_url,
    "handoff_rt_queue": _as_str,
    "handoff_rt_token": _as_str,
    "handoff_rt_user": _as_str,
    "handoff_rt_password": _as_str,
    "handoff_rt_custom_field": _as_str,
    "handoff_rt_attachment_budget": _as_size(0, 1024 * MiB),
    "handoff_retry_base_seconds": _as_float(0.01, 86400),
    "handoff_retry_max_seconds": _as_float(0.01, 7 * 86400),
    "handoff_retry_horizon_seconds": _as_float(1, 90 * 86400),
    "handoff_attempt_timeout_seconds": _as_float(0.1, 3600),
    "metrics_token": _as_str,
    "alert_webhook_url": _as_http_url,
}


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from (lowest to highest) defaults, the TOML file, the environment, overrides."""
    env = os.environ if env is None else env
    raw: dict[str, tuple[str, Any]] = {}
    problems: list[str] = []
    path = config_file or env.get("CHATD_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError([f"config file {path}: {exc}"]) from None
        data = data.get("chatd", data)
        for key, value in data.items():
            if key not in _PARSERS:
                problems.append(f"{path}: unknown setting {key!r}")
                continue
            raw[key] = (f"{path}: {key}", value)
    known = {f"CHATD_{k.upper()}" for k in _PARSERS} | {"CHATD_CONFIG"}
    for name, value in env.items():
        if name.startswith("CHATD_"):
            key = name[6:].lower()
            if name not in known:
                problems.append(f"{name}: unknown setting")
                continue
            if key in _PARSERS:
                raw[key] = (name, value)
    for key, value in overrides.items():
        if value is not None:
            raw[key] = (f"--{key.replace('_', '-')}", value)
    values: dict[str, Any] = {}
    for key, (where, value) in raw.items():
        try:
            values[key] = _PARSERS[key](value)
        except ValueError as exc:
            shown = "***" if key in SECRETS else repr(value)
            problems.append(f"{where}: {exc} (got {shown})")
    settings = Settings(**values)
    if settings.wait_warning_seconds > settings.wait_target_seconds:
        problems.append("CHATD_WAIT_WARNING_SECONDS must not be above CHATD_WAIT_TARGET_SECONDS")
    if settings.default_capacity > settings.max_capacity:
        problems.append("CHATD_DEFAULT_CAPACITY must not be above CHATD_MAX_CAPACITY")
    if settings.upload_max_bytes > settings.upload_session_max_bytes:
        problems.append(
            "CHATD_UPLOAD_MAX_BYTES must not be above CHATD_UPLOAD_SESSION_MAX_BYTES"
        )
    problems += _handoff_problems(settings)
    if settings.widget_secret and len(settings.widget_secret) < 32:
        problems.append("CHATD_WIDGET_SECRET must be at least 32 characters (HS256 key)")
    if problems:
        raise ConfigError(problems)
    return settings


def _handoff_problems(s: Settings) -> list[str]:
    out = []
    if "webhook" in s.handoff_backends:
        if not s.handoff_webhook_url:
            out.append("CHATD_HANDOFF_WEBHOOK_URL is needed for the webhook backend")
        if not s.handoff_webhook_secret:
            out.append("CHATD_HANDOFF_WEBHOOK_SECRET (whsec_...) is needed for the webhook backend")
    if "rt" in s.handoff_backends:
        if not s.handoff_rt_url:
            out.append("CHATD_HANDOFF_RT_URL is needed for the rt backend")
        if not s.handoff_rt_queue.strip():
            out.append("CHATD_HANDOFF_RT_QUEUE must name a queue")
        if not s.handoff_rt_token and not (s.handoff_rt_user and s.handoff_rt_password):
            out.append(
                "the rt backend needs CHATD_HANDOFF_RT_TOKEN, or CHATD_HANDOFF_RT_USER and "
                "CHATD_HANDOFF_RT_PASSWORD"
            )
    if s.handoff_retry_base_seconds > s.handoff_retry_max_seconds:
        out.append(
            "CHATD_HANDOFF_RETRY_BASE_SECONDS must not be above CHATD_HANDOFF_RETRY_MAX_SECONDS"
        )
    return out
