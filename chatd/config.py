"""Settings from ``CHATD_*`` environment variables and an optional TOML file.

Every setting has one name: ``offer_timeout`` in the TOML file is ``CHATD_OFFER_TIMEOUT`` in
the environment, which wins. Values are validated at start; every bad value is reported
with its name, and nothing starts. The table of settings is docs/configuration.md.

Each setting is declared once, in ``Settings``: its type, its default, its parser (with its
bounds) and, for the desk's, the ``DeskSettings`` field it feeds. The parsers, the secrets,
the desk's and the transport's settings are derived from that declaration, and a test
(tests/test_settings_declared_once.py) fails when docs/configuration.md disagrees with it.
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
from urllib.parse import urlsplit

from .store import StoreURLError, check_url

MiB = 1024 * 1024
# The attachment types chatd can recognise from their bytes (chatd/kinds.py, docs/attachments.md).
UPLOAD_KINDS = ("png", "jpeg", "gif", "webp", "text", "gzip", "zip", "pdf")


HANDOFF_BACKENDS = ("file", "webhook", "rt")


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Bounded:
    """A numeric parser with its bounds, which docs/configuration.md states too (a test
    compares them): ``kind`` is "integer", "number" or "size"."""

    parse: Callable[[Any], Any]
    low: float
    high: float
    kind: str

    def __call__(self, v: Any) -> Any:
        return self.parse(v)


def setting(default: Any, parse: Callable[[Any], Any], *, desk: str | None = None,
            secret: bool = False) -> Any:
    """Declare a setting: its default and its parser (with its bounds); ``desk`` names the
    field of ``DeskSettings`` it feeds; a ``secret`` is never printed."""
    meta: dict[str, Any] = {"parse": parse, "secret": secret}
    if desk is not None:
        meta["desk"] = desk
    return field(default=default, repr=not secret, metadata=meta)


def _as_int(lo: int, hi: int) -> Bounded:
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

    return Bounded(parse, lo, hi, "integer")


def _as_float(lo: float, hi: float) -> Bounded:
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

    return Bounded(parse, lo, hi, "number")


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


def _as_size(lo: int, hi: int) -> Bounded:
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

    return Bounded(parse, lo, hi, "size")


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


def _as_redis_url(v: Any) -> str:
    s = _as_str(v).strip()
    if s and urlsplit(s).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be redis://HOST:PORT[/DB], rediss://… or unix://PATH")
    return s


def _as_db_url(v: Any) -> str:
    s = _as_str(v).strip()
    try:
        check_url(s)
    except StoreURLError as exc:
        raise ValueError(str(exc)) from None
    return s


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", _as_str)
    port: int = setting(8080, _as_int(0, 65535))
    listen_backlog: int = setting(4096, _as_int(16, 65535))
    # new TCP connections taken a second (bursts of a tenth); the others wait (chatd.web.gate)
    accept_rate: float = setting(300.0, _as_float(1, 1_000_000))
    database_url: str = setting("sqlite:///var/chatd.db", _as_db_url)
    database_pool_size: int = setting(10, _as_int(2, 1000))
    desk_lease_seconds: float = setting(3.0, _as_float(1, 60))
    redis_url: str = setting("", _as_redis_url, secret=True)
    upload_dir: str = setting("uploads", _as_str)
    widget_secret: str = setting("", _as_str, secret=True)
    allow_guests: bool = setting(False, _as_bool)
    allowed_origins: tuple[str, ...] = setting((), _as_origins)
    public_url: str = setting("", _as_str)
    trusted_proxies: tuple[str, ...] = setting((), _as_networks)
    offer_timeout: float = setting(30.0, _as_float(1, 3600), desk="offer_timeout")
    grace_seconds: float = setting(60.0, _as_float(0, 86400), desk="grace")
    wait_target_seconds: float = setting(300.0, _as_float(1, 86400), desk="wait_target")
    wait_warning_seconds: float = setting(240.0, _as_float(1, 86400), desk="wait_warning")
    wait_objective: float = setting(0.9, _as_float(0.01, 0.999), desk="wait_objective")
    default_capacity: int = setting(3, _as_int(1, 100), desk="default_capacity")
    max_capacity: int = setting(20, _as_int(1, 100), desk="max_capacity")
    default_handle_seconds: float = setting(
        600.0, _as_float(1, 86400), desk="default_handle_seconds"
    )
    token_ttl_seconds: float = setting(12 * 3600.0, _as_float(60, 90 * 86400))
    message_rate: float = setting(5.0, _as_float(0.1, 10000))
    message_burst: int = setting(20, _as_int(1, 100000))
    connect_rate: float = setting(2.0, _as_float(0.1, 10000))
    connect_burst: int = setting(30, _as_int(1, 100000))
    max_event_bytes: int = setting(64 * 1024, _as_int(1024, 16 * 1024 * 1024))
    # Bounds on what one client can hold or send (docs/security.md).
    event_rate: float = setting(20.0, _as_float(0.1, 10000))  # every event, per connection
    event_burst: int = setting(60, _as_int(1, 100000))
    # events refused for the rate in a row, past which the connection is closed:
    event_refusals_max: int = setting(10, _as_int(1, 100000))
    # queued for a client that does not read:
    send_queue_max_bytes: int = setting(1 * MiB, _as_size(64 * 1024, 1024 * MiB))
    connections_per_address: int = setting(100, _as_int(1, 1_000_000))
    # Engine.IO handshakes per client address:
    handshake_rate: float = setting(5.0, _as_float(0.1, 10000))
    handshake_burst: int = setting(20, _as_int(1, 100000))
    # handshake to namespace connect:
    join_timeout_seconds: float = setting(10.0, _as_float(0.5, 3600))
    # an address whose connection was closed for breaking a bound may not connect for:
    abuse_penalty_seconds: float = setting(10.0, _as_float(0, 3600))
    # Server-wide budgets for the dearest work a crowd of addresses can ask for.
    # new Engine.IO sessions a second, all addresses:
    handshake_rate_total: float = setting(200.0, _as_float(1, 1_000_000))
    # messages of history a second (in session:resume answers), all connections:
    history_messages_rate_total: float = setting(2000.0, _as_float(1, 1_000_000))
    chat_max_messages: int = setting(5000, _as_int(10, 10_000_000), desk="chat_max_messages")
    # after the chat closes:
    resume_token_ttl_seconds: float = setting(
        86_400.0, _as_float(0, 365 * 86400), desk="resume_token_ttl"
    )
    # failed logins of one account before it backs off:
    login_backoff_after: int = setting(5, _as_int(1, 1000))
    login_backoff_max_seconds: float = setting(900.0, _as_float(1, 86400))
    limiter_max_keys: int = setting(100_000, _as_int(100, 10_000_000))
    password_hash_workers: int = setting(2, _as_int(1, 64))
    log_level: str = setting("info", _as_choice("debug", "info", "warning", "error"))
    log_format: str = setting("text", _as_choice("text", "json"))
    demo: bool = setting(False, _as_bool)
    upload_max_bytes: int = setting(25 * MiB, _as_size(1, 64 * 1024 * MiB))
    upload_session_max_count: int = setting(50, _as_int(1, 100_000))
    upload_session_max_bytes: int = setting(200 * MiB, _as_size(1, 1024 * 1024 * MiB))
    upload_rate: float = setting(0.2, _as_float(0.001, 10000))
    upload_burst: int = setting(10, _as_int(1, 100000))
    upload_types: tuple[str, ...] = setting(UPLOAD_KINDS, _as_upload_kinds)
    upload_concurrent_per_session: int = setting(2, _as_int(1, 1000))
    upload_concurrent_per_customer: int = setting(4, _as_int(1, 1000))
    upload_concurrent_per_address: int = setting(16, _as_int(1, 100_000))
    upload_idle_timeout_seconds: float = setting(30.0, _as_float(1, 3600))
    upload_total_timeout_seconds: float = setting(600.0, _as_float(1, 86400))
    upload_min_free_bytes: int = setting(1024 * MiB, _as_size(0, 1024 * 1024 * MiB))
    # Attachments in an S3-compatible object store (docs/attachments.md#object-store);
    # an empty URL keeps them in the upload folder only.
    s3_url: str = setting("", _as_http_url)
    s3_bucket: str = setting("", _as_str)
    s3_region: str = setting("us-east-1", _as_str)
    s3_prefix: str = setting("", _as_str)
    s3_access_key_id: str = setting("", _as_str, secret=True)
    s3_secret_access_key: str = setting("", _as_str, secret=True)
    # Handoff to ticketing backends (docs/handoff.md).
    handoff_backends: tuple[str, ...] = setting(("file",), _as_backends, desk="handoff_backends")
    # empty: a "handoff" folder beside the SQLite database
    handoff_file_dir: str = setting("", _as_str)
    handoff_webhook_url: str = setting("", _as_http_url)
    handoff_webhook_secret: str = setting("", _as_webhook_secret, secret=True)
    handoff_rt_url: str = setting("", _as_http_url)
    handoff_rt_queue: str = setting("General", _as_str)
    handoff_rt_token: str = setting("", _as_str, secret=True)
    handoff_rt_user: str = setting("", _as_str)
    handoff_rt_password: str = setting("", _as_str, secret=True)
    handoff_rt_custom_field: str = setting("", _as_str)
    handoff_rt_attachment_budget: int = setting(5 * MiB, _as_size(0, 1024 * MiB))
    handoff_retry_base_seconds: float = setting(10.0, _as_float(0.01, 86400))
    handoff_retry_max_seconds: float = setting(3600.0, _as_float(0.01, 7 * 86400))
    handoff_retry_horizon_seconds: float = setting(86_400.0, _as_float(1, 90 * 86400))
    handoff_attempt_timeout_seconds: float = setting(30.0, _as_float(0.1, 3600))
    # Retention and the purge (docs/operations.md); 0 days: kept for ever.
    retention_days: int = setting(0, _as_int(0, 36_500))
    retention_dead_letter_days: int = setting(0, _as_int(0, 36_500))
    purge_interval_seconds: float = setting(3600.0, _as_float(0, 7 * 86400))  # 0: no purge here
    # Erasure (docs/operations.md#erasure-and-export); empty: audit lines hold no hash.
    erasure_key: str = setting("", _as_str, secret=True)
    # Monitoring (docs/monitoring.md).
    metrics_token: str = setting("", _as_str, secret=True)  # empty: /metrics answers loopback only
    alert_webhook_url: str = setting("", _as_http_url, secret=True)  # empty: no alert webhook

    def public(self) -> dict[str, Any]:
        """Settings safe to print: secrets are masked."""
        out = dataclasses.asdict(self)
        out["widget_secret"] = "***" if self.widget_secret else ""
        for key in SECRETS:
            out[key] = "***" if out[key] else ""
        return out




# Derived from the declaration above: the parser of each setting, and the secrets (never
# printed: masked in Settings.public() and in configuration errors; a Slack-style incoming
# webhook URL is itself a credential).
_PARSERS: dict[str, Callable[[Any], Any]] = {
    f.name: f.metadata["parse"] for f in dataclasses.fields(Settings)
}
SECRETS = tuple(f.name for f in dataclasses.fields(Settings) if f.metadata["secret"])


def derive(settings: Settings, cls: type[Any], *, via: str | None = None,
           **extra: Any) -> Any:
    """An instance of the dataclass ``cls`` from ``settings``: each of its fields from the
    setting of the same name, or with ``via``, from the setting declared with
    ``<via>=<field>`` (``desk`` for ``DeskSettings``); ``extra`` overrides. The settings
    are declared once, in ``Settings``."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        target = f.metadata.get(via) if via else f.name
        if target in names:
            values[target] = getattr(settings, f.name)
    return cls(**{**values, **extra})


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
