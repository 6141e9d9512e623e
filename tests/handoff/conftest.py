"""Fixtures for handoff tests: a real Request Tracker 5 on loopback, a signature-checking
webhook receiver that can be made to fail, and a proxy that can lose RT's answers.

Request Tracker comes from Debian's packages (``make test`` installs them as root, see
scripts/install-rt.sh). It is started once per test run on a fresh SQLite database and
stopped by its PID at the end. Without it the RT tests fail, never skip, unless the
developer opts out explicitly with CHATD_TEST_SKIP_RT=1 (docs/handoff.md#tests).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

RT_HOME = Path("/usr/share/request-tracker5")
RT_SERVER = RT_HOME / "libexec" / "rt-server"
RT_SETUP_DATABASE = Path("/usr/sbin/rt-setup-database-5")
RT_CUSTOM_FIELD = "chatd session"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"chatd-test-webhook-key-0123456789ab").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- Request Tracker

_RT_CONFIG = """\
Set($rtname, 'chatd-test');
Set($Organization, 'chatd-test');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{db}');
Set($WebPath, '');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($MailCommand, 'mbox');
Set($LogDir, '{home}');
Set($LogToSyslog, undef);
Set($LogToSTDERR, 'error');
Set($Timezone, 'UTC');
1;
"""

# Creates the custom field that carries the session id (applied to the General queue) and
# an auth token for root; prints the token.
_RT_SETUP = """\
use strict; use warnings;
use lib '/usr/share/request-tracker5/lib';
use RT;
RT::LoadConfig(); RT::Init();
my $root = RT::CurrentUser->new(RT->SystemUser); $root->Load('root');
my $cf = RT::CustomField->new(RT->SystemUser);
my ($ok, $msg) = $cf->Create(Name => '{cf}', Type => 'Freeform', MaxValues => 1,
    LookupType => 'RT::Queue-RT::Ticket');
die "custom field: $msg" unless $ok;
my $queue = RT::Queue->new(RT->SystemUser); $queue->Load('General');
($ok, $msg) = $cf->AddToObject($queue); die "apply: $msg" unless $ok;
my $token = RT::AuthToken->new($root);
my ($id, $m, $auth) = $token->Create(Owner => $root->Id, Description => 'chatd tests');
die "token: $m" unless $id;
print "$auth\\n";
"""


@dataclass
class RTServer:
    url: str
    token: str
    user: str = "root"
    password: str = "password"  # the initial root password of a fresh RT database
    queue: str = "General"
    custom_field: str = RT_CUSTOM_FIELD
    setup_seconds: float = 0.0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession(headers=self._headers()) as http:
            async with http.get(self.url + "/REST/2.0" + path) as r:
                assert r.status == 200, (path, r.status, await r.text())
                return await r.json(content_type=None)

    async def tickets_for(self, session_id: str) -> list[dict[str, Any]]:
        """Every ticket whose subject carries the session's tag (whatever the custom field
        says), so a duplicate could not hide."""
        query = quote(f"Subject LIKE 'chatd:{session_id}'")
        data = await self.get(f"/tickets?query={query}&fields=Subject")
        return list(data["items"])

    async def create_transaction_attachments(self, ticket_id: str) -> list[dict[str, Any]]:
        """The attachments (MIME parts) of the ticket's Create transaction, with content."""
        history = await self.get(f"/ticket/{ticket_id}/history?fields=Type")
        create = [t for t in history["items"] if t.get("Type") == "Create"]
        assert create, history
        txn = create[0]["id"]
        listing = await self.get(f"/transaction/{txn}/attachments?fields=Filename")
        out = []
        for item in listing["items"]:
            out.append(await self.get(f"/attachment/{item['id']}"))
        return out


def _rt_opt_out() -> bool:
    return os.environ.get("CHATD_TEST_SKIP_RT", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RTServer]:
    if not RT_SERVER.exists() or not RT_SETUP_DATABASE.exists():
        if _rt_opt_out():
            pytest.skip("Request Tracker tests skipped on request (CHATD_TEST_SKIP_RT=1)")
        pytest.fail(
            "Request Tracker 5 is not installed: run `make test` as root (it installs "
            "request-tracker5, rt5-db-sqlite and rt5-standalone), or set CHATD_TEST_SKIP_RT=1 "
            "to skip the RT tests on purpose"
        )
    started = time.monotonic()
    home = tmp_path_factory.mktemp("rt")
    port = free_port()
    conf = home / "conf"
    conf.mkdir()
    (conf / "RT_SiteConfig.pm").write_text(
        _RT_CONFIG.format(db=home / "rt.db", port=port, home=home)
    )
    env = {
        **os.environ,
        "RT_SITE_CONFIG": str(conf / "RT_SiteConfig.pm"),
        # Only our snippets: the system's RT_SiteConfig.d points at the system database.
        "RT_SITE_CONFIG_DIR": str(conf),
    }
    log_path = home / "rt.log"
    with open(log_path, "ab") as log:
        subprocess.run(
            [str(RT_SETUP_DATABASE), "--action", "init", "--skip-create"],
            env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120, cwd=home,
        )
    (home / "setup.pl").write_text(_RT_SETUP.format(cf=RT_CUSTOM_FIELD))
    token = subprocess.run(
        ["perl", str(home / "setup.pl")], env=env, capture_output=True, check=True,
        timeout=120, cwd=home,
    ).stdout.decode().strip().splitlines()[-1]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(RT_SERVER), "--host", "127.0.0.1", "--port", str(port),
             "--max-workers", "3"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_rt(url, token, proc, log_path)
        yield RTServer(url=url, token=token, setup_seconds=time.monotonic() - started)
    finally:
        _stop(proc)


def _wait_rt(url: str, token: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        request = urllib.request.Request(
            url + "/REST/2.0/rt", headers={"Authorization": f"token {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail("Request Tracker did not start: " + log_path.read_text()[-3000:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    # The prefork master stops its workers when it gets SIGTERM.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------- webhook receiver


def verify_standard_webhook(secret: str, headers: Any, body: bytes) -> bool:
    """The receiver's side of the Standard Webhooks spec, written from the spec."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for candidate in headers.get("webhook-signature", "").split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


@dataclass
class Attempt:
    webhook_id: str
    valid: bool
    status: int
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Answers with ``statuses`` in turn (then 200); records every attempt. With ``hold``
    set, requests wait (unanswered) until it is cleared: a delivery in flight."""

    port: int
    secret: str = WEBHOOK_SECRET
    statuses: list[int] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    received_ids: list[str] = field(default_factory=list)  # on arrival, answered or not
    hold: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/chatd"

    @property
    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status == 200 and a.valid]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received_ids.append(request.headers.get("webhook-id", ""))
        valid = verify_standard_webhook(self.secret, request.headers, body)
        if self.hold:
            self.held.set()
            await self._release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        if not valid:
            status = 401
        self.attempts.append(
            Attempt(request.headers.get("webhook-id", ""), valid, status, json.loads(body))
        )
        self._changed.set()
        if status == 200:
            return web.json_response(self.reply)
        return web.Response(status=status, text=f"failing on purpose with {status}")

    def release(self) -> None:
        self.hold = False
        self._release.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/chatd", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_accepted(self, count: int = 1, timeout: float = 30.0) -> list[Attempt]:
        async def scan() -> list[Attempt]:
            while len(self.accepted) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.accepted

        return await asyncio.wait_for(scan(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(port=free_port())
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def receiver_off() -> AsyncIterator[WebhookReceiver]:
    """A receiver whose port is chosen but which is not listening until started."""
    r = WebhookReceiver(port=free_port())
    yield r
    await r.stop()


# ---------------------------------------------------------------------- a lossy RT proxy


@dataclass
class RTProxy:
    """Forwards to RT. ``lose`` answers of ticket creations are lost after RT acted on them
    (502, as a gateway whose upstream connection broke); with ``hold`` they are never
    answered at all (until released) — the chatd process can be killed meanwhile."""

    target: str
    port: int = field(default_factory=free_port)
    lose: int = 0
    hold: bool = False
    creations: int = 0
    forwarded: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        async with aiohttp.ClientSession() as http:
            async with http.request(request.method, self.target + request.path_qs,
                                    data=body, headers=headers) as r:
                payload = await r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "application/json")
        if request.method == "POST" and request.path.rstrip("/").endswith("/REST/2.0/ticket"):
            self.creations += 1
            self.forwarded.set()
            if self.hold:
                await self._release.wait()
                return web.Response(status=504)
            if self.lose > 0:
                self.lose -= 1
                return web.Response(status=502, text="bad gateway")
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    def release(self) -> None:
        self.hold = False
        self._release.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def rt_proxy(rt_server: RTServer) -> AsyncIterator[RTProxy]:
    p = RTProxy(rt_server.url)
    await p.start()
    yield p
    await p.stop()


async def eventually(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll an async predicate until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request: pytest.FixtureRequest) -> str:
    """The handoff tests run on both storage backends."""
    return str(request.param)
